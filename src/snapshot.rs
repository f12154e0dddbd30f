//! The snapshot: one ELF file holding the symbol tables of every linker file.
//!
//! Building one takes two walks over the linker files. The first feeds a
//! [`Census`] (how many symbols, how many of them local, how many string bytes),
//! which gives the [`SnapshotLayout`]. The second feeds a [`Writer`], which emits the
//! file straight into the pages of a [`Sink`]. The writer never writes outside the
//! layout: when the second walk finds more (or, at [`Writer::finish`], fewer) symbols
//! or string bytes than the first, the linker files changed in between and the
//! attempt fails with [`Error::Changed`]; the caller throws it away and retries.
//! Written over a stale snapshot, the writer keeps the pages of the files that did
//! not change ([`Writer::keep`], [`crate::kept`]).
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
//! reports ([`LinkerFile::symbol_value`]) and is kept where it reports none. A
//! writer given the memo of the last build ([`Writer::remember`]) takes the answers
//! for the files that build met from it instead of asking again ([`crate::values`]).
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
use crate::kept::{self, Contents, Listed, Span};
use crate::values::{FileKey, Memos, ValueMemo, Values};
use core::marker::PhantomData;
use core::ptr::NonNull;
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
    /// Which file this is, as loaded, for remembering the linker's answers from one
    /// build to the next ([`crate::values`]); None: never remembered.
    fn key(&self) -> Option<FileKey> {
        None
    }
}

/// Where a snapshot's bytes go: the pages of the file, each grabbed once, filled and
/// given back. Page `index` holds the file's bytes from `index * page_size()`; it is
/// `page_size()` bytes long, except that the last page may be shorter, as long as it
/// holds the file's end. The writer fills every byte of every page it grabs (past the
/// file's end with zeros), never asks for a page it holds, never asks for a page
/// past the file's end, and never for one it said it would skip ([`Sink::skip`]).
pub trait Sink {
    type Page: Page;
    /// The size of a page in bytes (at least 1).
    fn page_size(&self) -> usize;
    /// Page `index`, for writing. Its bytes are not necessarily zero.
    fn grab(&mut self, index: u64) -> Result<Self::Page>;
    /// Gives a page back: `complete` when every one of its bytes was written since
    /// the grab; otherwise the attempt failed, and the page's content is garbage.
    fn release(&mut self, page: Self::Page, complete: bool);
    /// Pages `[first, end)` will not be asked for: they are kept as they are. A
    /// sink that grabs pages ahead leaves them alone.
    fn skip(&mut self, _first: u64, _end: u64) {}
    /// Page `index` is the first wholly inside a part of the file that is written
    /// apart from the pages before it (maybe before them): a sink that grabs pages
    /// ahead does not grab past it from a page before it.
    fn boundary(&mut self, _index: u64) {}
}

/// A page held for writing.
pub trait Page {
    fn bytes(&mut self) -> &mut [u8];
}

/// How many pages a [`Writer`] holds at most at once: the page each of its three
/// cursors is in, and the (at most two) pages where one part of the file ends and
/// the next begins, held until both parts are written.
pub const HELD_PAGES: usize = 6;

/// A sink over a buffer of the snapshot's size, in pages of a chosen size.
pub struct SliceSink<'a> {
    ptr: NonNull<u8>,
    len: usize,
    page: usize,
    held: [Option<u64>; HELD_PAGES],
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> SliceSink<'a> {
    /// Pages of 4 KiB, as the kernel's.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self::with_page_size(buf, PAGE_SIZE)
    }

    /// Pages of `page` bytes (0 is refused at the first grab).
    pub fn with_page_size(buf: &'a mut [u8], page: usize) -> Self {
        SliceSink {
            ptr: NonNull::from(&mut *buf).cast(),
            len: buf.len(),
            page,
            held: [None; HELD_PAGES],
            _buf: PhantomData,
        }
    }
}

/// A page of a [`SliceSink`].
pub struct SlicePage<'a> {
    ptr: NonNull<u8>,
    len: usize,
    index: u64,
    _buf: PhantomData<&'a mut [u8]>,
}

impl Page for SlicePage<'_> {
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the page is `len` bytes inside the sink's buffer, borrowed for 'a;
        // the sink hands out each page once until it is released (its `held` list),
        // and pages do not overlap, so no other reference to these bytes exists.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<'a> Sink for SliceSink<'a> {
    type Page = SlicePage<'a>;

    fn page_size(&self) -> usize {
        self.page
    }

    fn grab(&mut self, index: u64) -> Result<SlicePage<'a>> {
        if self.page == 0 || self.held.contains(&Some(index)) {
            return Err(Error::Invalid);
        }
        let start = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(self.page))
            .filter(|&s| s < self.len)
            .ok_or(Error::TooLarge)?;
        let len = self.page.min(self.len.saturating_sub(start));
        let slot = self
            .held
            .iter_mut()
            .find(|h| h.is_none())
            .ok_or(Error::Invalid)?;
        *slot = Some(index);
        Ok(SlicePage {
            // SAFETY: start < len, so the pointer stays inside the buffer.
            ptr: unsafe { self.ptr.add(start) },
            len,
            index,
            _buf: PhantomData,
        })
    }

    fn release(&mut self, page: SlicePage<'a>, _complete: bool) {
        if let Some(h) = self.held.iter_mut().find(|h| **h == Some(page.index)) {
            *h = None;
        }
    }
}

/// Pages handed out a run at a time, as a VM object gives them (the kernel's
/// [`Sink`] through [`Batched`]).
///
/// # Safety
/// `grab` fills `out[..n]` (and returns `n`, at least 1 on success) with the pages
/// `first..first + n`, each with an address valid for writes of `page_size()` bytes
/// that nothing else reads or writes until the page is given to `release`.
pub unsafe trait PageRuns {
    type Handle: Copy + Default;
    fn page_size(&self) -> usize;
    /// Pages `first..` (at most `out.len()`), for writing; it may give fewer, never
    /// a page already written.
    fn grab(&mut self, first: u64, out: &mut [(Self::Handle, NonNull<u8>)]) -> Result<usize>;
    /// Gives pages back: `complete` when every byte of each was written.
    ///
    /// # Safety
    /// Each page came from `grab` and is given back once.
    unsafe fn release(&mut self, pages: &[Self::Handle], complete: bool);
}

/// Pages grabbed ahead at once, and pages given back at once.
pub const BATCH: usize = 16;
/// Runs grabbed ahead and not used up yet, at most: one for each part of the file
/// the writer fills (its three cursors).
const RUNS: usize = 3;

// A run's pages are bits of a u32 (with room for bit BATCH when masking).
const _: () = assert!(BATCH < u32::BITS as usize);

/// Up to BATCH pages from `first` on, grabbed in one call; those not handed out
/// yet are marked in `left` (bit k for page first + k).
#[derive(Clone, Copy)]
struct Run<H> {
    first: u64,
    left: u32,
    pages: [(H, NonNull<u8>); BATCH],
}

impl<H: Copy> Run<H> {
    /// The pages not handed out yet, with their indices.
    fn left(&self) -> impl Iterator<Item = (u64, H)> + '_ {
        (0u64..)
            .zip(&self.pages)
            .filter(|(k, _)| self.left.wrapping_shr(*k as u32) & 1 != 0)
            .map(|(k, p)| (self.first.saturating_add(k), p.0))
    }
}

/// A [`Sink`] over [`PageRuns`] that asks for pages and gives them back in runs of
/// up to [`BATCH`], so that a snapshot costs the kernel two calls per run instead of
/// two per page. A run never includes a page the writer holds, or one grabbed ahead
/// or waiting to go back (which would deadlock on its busy state).
pub struct Batched<'r, R: PageRuns> {
    runs: &'r mut R,
    /// The object's pages.
    pages: u64,
    ahead: [Option<Run<R::Handle>>; RUNS],
    /// Indices of the pages handed out to the writer.
    out: [Option<u64>; HELD_PAGES],
    /// Complete pages given back by the writer, `done[..waiting]`, waiting for one
    /// release.
    done: [(u64, R::Handle); BATCH],
    waiting: usize,
    /// Page ranges `[first, end)` never asked for (Sink::skip).
    skipped: [(u64, u64); 3],
    /// Pages a run must not reach from below (Sink::boundary).
    boundaries: [u64; 2],
}

impl<'r, R: PageRuns> Batched<'r, R> {
    /// Pages of an object of `size` bytes.
    pub fn new(runs: &'r mut R, size: u64) -> Self {
        let page = u64::try_from(runs.page_size()).unwrap_or(0).max(1);
        Batched {
            pages: size.div_ceil(page),
            runs,
            ahead: [None; RUNS],
            out: [None; HELD_PAGES],
            done: [(0, R::Handle::default()); BATCH],
            waiting: 0,
            skipped: [(0, 0); 3],
            boundaries: [u64::MAX; 2],
        }
    }

    fn waiting(&self) -> &[(u64, R::Handle)] {
        self.done.get(..self.waiting).unwrap_or_default()
    }

    /// The first page after `index` that is somewhere here (handed out, grabbed
    /// ahead or waiting to go back), or u64::MAX.
    fn next_busy(&self, index: u64) -> u64 {
        let out = self.out.iter().flatten().copied();
        let skipped = self.skipped.iter().filter(|s| s.0 < s.1).map(|s| s.0);
        let boundaries = self.boundaries.iter().copied();
        let ahead = self
            .ahead
            .iter()
            .flatten()
            .flat_map(|r| r.left().map(|p| p.0));
        let done = self.waiting().iter().map(|d| d.0);
        out.chain(ahead)
            .chain(done)
            .chain(skipped)
            .chain(boundaries)
            .filter(|&i| i > index)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Gives the waiting pages back, complete, in one call.
    fn flush(&mut self) {
        let mut list = [R::Handle::default(); BATCH];
        for (dst, (_, h)) in list.iter_mut().zip(self.waiting()) {
            *dst = *h;
        }
        if let Some(pages) = list.get(..self.waiting).filter(|p| !p.is_empty()) {
            // SAFETY: pages the writer gave back, each once, and no longer listed
            // as waiting (below): from grab, given back once.
            unsafe { self.runs.release(pages, true) };
        }
        self.waiting = 0;
    }

    /// Page `index` from a run grabbed ahead, if it is there.
    fn take_ahead(&mut self, index: u64) -> Option<(R::Handle, NonNull<u8>)> {
        for slot in self.ahead.iter_mut() {
            let Some(run) = slot else { continue };
            let k = index.wrapping_sub(run.first);
            if k >= BATCH as u64 {
                continue;
            }
            // k < BATCH < 32: the shift stays inside the word.
            let bit = 1u32.wrapping_shl(k as u32);
            if run.left & bit == 0 {
                continue;
            }
            let page = run.pages.get(k as usize).copied();
            run.left &= !bit;
            if run.left == 0 {
                *slot = None;
            }
            return page;
        }
        None
    }
}

/// A page of a [`Batched`] sink.
pub struct RunPage<'r, H> {
    index: u64,
    handle: H,
    va: NonNull<u8>,
    len: usize,
    _runs: PhantomData<&'r mut ()>,
}

impl<H> Page for RunPage<'_, H> {
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: PageRuns::grab's contract: len (the page size) bytes at va, for
        // nobody else until released; the Batched sink hands each page out once
        // until the writer gives it back, and &mut self makes this slice unique.
        unsafe { core::slice::from_raw_parts_mut(self.va.as_ptr(), self.len) }
    }
}

impl<'r, R: PageRuns> Sink for Batched<'r, R> {
    type Page = RunPage<'r, R::Handle>;

    fn page_size(&self) -> usize {
        self.runs.page_size()
    }

    fn skip(&mut self, first: u64, end: u64) {
        if let Some(slot) = self.skipped.iter_mut().find(|s| s.0 >= s.1) {
            *slot = (first, end);
        }
    }

    fn boundary(&mut self, index: u64) {
        if let Some(slot) = self.boundaries.iter_mut().find(|b| **b == u64::MAX) {
            *slot = index;
        }
    }

    fn grab(&mut self, index: u64) -> Result<RunPage<'r, R::Handle>> {
        let out = self
            .out
            .iter()
            .position(Option::is_none)
            .ok_or(Error::Invalid)?;
        if self.out.contains(&Some(index)) || index >= self.pages {
            return Err(Error::Invalid);
        }
        let len = self.runs.page_size();
        let (handle, va) = match self.take_ahead(index) {
            Some(page) => page,
            None => {
                if self.waiting().iter().any(|d| d.0 == index) {
                    return Err(Error::Invalid);
                }
                // This page and those after it that are nowhere here, a run's worth
                // if there is room for one ahead.
                let free = self.ahead.iter().position(Option::is_none);
                let most = if free.is_some() { BATCH } else { 1 };
                let stop = self.next_busy(index).min(self.pages);
                let count = usize::try_from(stop.saturating_sub(index))
                    .unwrap_or(usize::MAX)
                    .clamp(1, most);
                let mut pages = [(R::Handle::default(), NonNull::dangling()); BATCH];
                let run = pages.get_mut(..count).ok_or(Error::Invalid)?;
                let n = self.runs.grab(index, run)?.min(count);
                let first = *run.first().filter(|_| n > 0).ok_or(Error::Invalid)?;
                // All of the run but its first page stays ahead (a run has more than
                // one page only when a slot is free).
                let left = (1u32.wrapping_shl(n as u32).wrapping_sub(1)) & !1;
                if let Some(slot) = free.and_then(|f| self.ahead.get_mut(f)) {
                    if left != 0 {
                        *slot = Some(Run {
                            first: index,
                            left,
                            pages,
                        });
                    }
                }
                first
            }
        };
        if let Some(slot) = self.out.get_mut(out) {
            *slot = Some(index);
        }
        Ok(RunPage {
            index,
            handle,
            va,
            len,
            _runs: PhantomData,
        })
    }

    fn release(&mut self, page: RunPage<'r, R::Handle>, complete: bool) {
        if let Some(slot) = self.out.iter_mut().find(|o| **o == Some(page.index)) {
            *slot = None;
        }
        if !complete {
            // SAFETY: a page handed out by grab, given back by the writer once.
            unsafe { self.runs.release(&[page.handle], false) };
            return;
        }
        if self.waiting >= BATCH {
            self.flush();
        }
        if let Some(slot) = self.done.get_mut(self.waiting) {
            *slot = (page.index, page.handle);
            self.waiting = self.waiting.saturating_add(1);
        }
    }
}

impl<R: PageRuns> Drop for Batched<'_, R> {
    fn drop(&mut self) {
        self.flush();
        // Grabbed ahead and never asked for (only after a failed attempt).
        for run in self.ahead.iter_mut().filter_map(Option::take) {
            for (_, h) in run.left() {
                // SAFETY: grabbed ahead, never handed out, its run taken out of
                // `ahead` here.
                unsafe { self.runs.release(&[h], false) };
            }
        }
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
    /// Counts one more linker file, reading every symbol to count its locals.
    pub fn add(&mut self, file: &impl LinkerFile) -> Result<()> {
        let symbols = file.symbols()?;
        let locals = symbols.iter().filter(|s| s.is_local()).count();
        self.count(file, locals)
    }

    /// Counts one more linker file, taking its locals to come first, as ELF has them
    /// (the first non-local found by binary search, about 17 symbols read for
    /// 100,000). When a table breaks that rule, this count may be wrong, and the
    /// [`Writer`], which puts each symbol where its binding says, then finds more or
    /// fewer locals than laid out and fails with [`Error::Changed`]: the caller
    /// retries with [`Census::add`].
    pub fn add_ordered(&mut self, file: &impl LinkerFile) -> Result<()> {
        let symbols = file.symbols()?;
        let locals = symbols.partition_point(Elf64Sym::is_local);
        self.count(file, locals)
    }

    fn count(&mut self, file: &impl LinkerFile, locals: usize) -> Result<()> {
        let symbols = file.symbols()?;
        let strings = file.strings()?;
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
    /// Where the symbols other than the locals start.
    globals_offset: u64,
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
        // locals <= symbols: no further than strtab_offset.
        let globals_offset = locals
            .checked_mul(SYM_SIZE)
            .and_then(|b| b.checked_add(HEADER_SIZE))
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
            globals_offset,
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
    /// Where `.symtab`'s symbols other than the locals start.
    pub const fn globals_offset(&self) -> u64 {
        self.globals_offset
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

/// The size of a page of the kernel's VM objects (the architecture table's).
pub const PAGE_SIZE: usize = crate::elf::NATIVE.page_size as usize;

/// The pages a [`Writer`] holds, each with the count of its bytes written so far; a
/// page goes back to the sink, complete, as soon as all of its bytes are written.
struct Window<'w, S: Sink> {
    sink: &'w mut S,
    held: [Option<Held<S::Page>>; HELD_PAGES],
    page: u64,
    /// The size of the file.
    size: u64,
}

struct Held<P> {
    index: u64,
    page: P,
    filled: usize,
}

impl<S: Sink> Window<'_, S> {
    /// The slot holding page `index`, grabbed now if not held yet.
    fn slot(&mut self, index: u64) -> Result<usize> {
        if let Some(slot) = self
            .held
            .iter()
            .position(|h| h.as_ref().is_some_and(|h| h.index == index))
        {
            return Ok(slot);
        }
        let slot = self
            .held
            .iter()
            .position(Option::is_none)
            .ok_or(Error::Invalid)?;
        let start = index.checked_mul(self.page).ok_or(Error::TooLarge)?;
        if start >= self.size {
            return Err(Error::Invalid);
        }
        // The page must hold all of the file's bytes from `start` on, up to a page.
        let need = self.size.saturating_sub(start).min(self.page);
        let mut page = self.sink.grab(index)?;
        let len = page.bytes().len() as u64;
        if len < need || len > self.page {
            self.sink.release(page, false);
            return Err(Error::Invalid);
        }
        *self.held.get_mut(slot).ok_or(Error::Invalid)? = Some(Held {
            index,
            page,
            filled: 0,
        });
        Ok(slot)
    }

    /// The bytes of the file from `offset` to the end of its page, but not past
    /// `limit`, and the slot of that page. Empty when `offset >= limit`.
    fn span(&mut self, offset: u64, limit: u64) -> Result<(usize, &mut [u8])> {
        // page > 0 (Writer::new).
        let index = offset.checked_div(self.page).ok_or(Error::Invalid)?;
        let from = offset.checked_rem(self.page).ok_or(Error::Invalid)? as usize;
        let slot = self.slot(index)?;
        let want = usize::try_from(limit.saturating_sub(offset)).unwrap_or(usize::MAX);
        let held = self
            .held
            .get_mut(slot)
            .and_then(Option::as_mut)
            .ok_or(Error::Invalid)?;
        let bytes = held.page.bytes();
        let to = bytes.len().min(from.saturating_add(want));
        Ok((slot, bytes.get_mut(from..to).ok_or(Error::Invalid)?))
    }

    /// Records `n` more bytes written in `slot`'s page, and gives the page back once
    /// all of them are.
    fn filled(&mut self, slot: usize, n: usize) -> Result<()> {
        let entry = self.held.get_mut(slot).ok_or(Error::Invalid)?;
        let held = entry.as_mut().ok_or(Error::Invalid)?;
        held.filled = held.filled.checked_add(n).ok_or(Error::Invalid)?;
        if held.filled >= held.page.bytes().len() {
            if let Some(done) = entry.take() {
                self.sink.release(done.page, true);
            }
        }
        Ok(())
    }

    fn is_held(&self, index: u64) -> bool {
        self.held
            .iter()
            .any(|h| h.as_ref().is_some_and(|h| h.index == index))
    }

    /// Whether any page is still held (some of its bytes are not written).
    fn any_held(&self) -> bool {
        self.held.iter().any(Option::is_some)
    }
}

impl<S: Sink> Drop for Window<'_, S> {
    fn drop(&mut self) {
        // After a failed attempt: pages not filled go back as garbage.
        for held in self.held.iter_mut().filter_map(Option::take) {
            self.sink.release(held.page, false);
        }
    }
}

/// Where each part of the file is written: the header and the local symbols, the
/// other symbols, the strings.
const HEAD: usize = 0;
const GLOBALS: usize = 1;
const STRINGS: usize = 2;

/// The next byte a part of the file gets, and the end of that part.
#[derive(Clone, Copy)]
struct Cursor {
    pos: u64,
    end: u64,
}

/// The second walk: emits the snapshot of the files it is given, in order, straight
/// into the sink's pages (each symbol is read once from its linker file and
/// written once, fixed up, into its page).
///
/// After an error from [`Writer::add`], the attempt is over: drop the writer.
pub struct Writer<'w, S: Sink> {
    layout: SnapshotLayout,
    window: Window<'w, S>,
    cursors: [Cursor; 3],
    memos: Memos<'w>,
    kept: Kept<'w>,
    target: ElfTarget,
}

/// What a writer keeps of the snapshot it writes over, and what it records of the
/// one it writes ([`crate::kept`]).
struct Kept<'w> {
    /// The snapshot written over, and how many of its leading files are the same.
    old: Option<&'w Contents>,
    same: usize,
    /// Its pages left as they are.
    holes: [Span; 3],
    new: Option<&'w mut Contents>,
    /// Files added so far.
    files: usize,
}

impl<'w, S: Sink> Writer<'w, S> {
    /// Starts a snapshot with `layout` in `sink` (its header block is written
    /// before the first file, or at [`Writer::finish`]).
    pub fn new(layout: SnapshotLayout, target: &ElfTarget, sink: &'w mut S) -> Result<Self> {
        let page = u64::try_from(sink.page_size()).map_err(|_| Error::Invalid)?;
        if page == 0 {
            return Err(Error::Invalid);
        }
        if layout.symbols > 0 && layout.locals == 0 {
            // Every symbol table starts with its null symbol, a local: without any
            // local, entry 0 of the snapshot would be some global symbol.
            return Err(Error::BadLinkerFile);
        }
        let globals = layout.globals_offset;
        // The other symbols and the strings are written apart from the pages
        // before them (and the writer gives a page back once it is written).
        for start in [globals, layout.strtab_offset] {
            sink.boundary(start.div_ceil(page));
        }
        Ok(Writer {
            layout,
            window: Window {
                sink,
                held: Default::default(),
                page,
                size: layout.size,
            },
            cursors: [
                Cursor {
                    pos: 0,
                    end: globals,
                },
                Cursor {
                    pos: globals,
                    end: layout.strtab_offset,
                },
                Cursor {
                    pos: layout.strtab_offset,
                    end: layout.size,
                },
            ],
            memos: Memos::NONE,
            target: *target,
            kept: Kept {
                old: None,
                same: 0,
                holes: [Span::default(); 3],
                new: None,
                files: 0,
            },
        })
    }

    /// Writes the header block, before the first file (after [`Writer::keep`] has
    /// said which pages stay, so that a sink grabbing ahead leaves them).
    fn start(&mut self) -> Result<()> {
        if self.cursors[HEAD].pos == 0 {
            let header = self.layout.header(&self.target);
            self.write(HEAD, as_bytes(core::slice::from_ref(&header)))?;
        }
        Ok(())
    }

    /// Takes modules' values from what the build of `old` learnt, where it met the
    /// same files, and learns the others' into `new` (emptied first), for the next
    /// build ([`crate::values`]).
    pub fn remember(mut self, old: Option<&'w ValueMemo>, new: Option<&'w mut ValueMemo>) -> Self {
        self.memos = Memos::new(old, new);
        self
    }

    /// Writes over a snapshot described by `old`, of which the first `same` files
    /// are those this writer will be given first (the census walk's
    /// [`kept::Prefix`]): their bytes where they already lie are kept, and those
    /// files are checked to be the same again. Records the files written into
    /// `new` (emptied first), for the next build.
    pub fn keep(
        mut self,
        old: Option<&'w Contents>,
        same: usize,
        mut new: Option<&'w mut Contents>,
    ) -> Self {
        if let Some(new) = new.as_deref_mut() {
            new.clear();
        }
        let holes = old.map(|old| kept::holes(old, same, &self.layout, self.window.page));
        for h in holes.iter().flatten().filter(|h| h.start < h.end) {
            let page = self.window.page;
            self.window.sink.skip(h.start / page, h.end / page);
        }
        self.kept = Kept {
            old,
            same: if holes.is_some() { same } else { 0 },
            holes: holes.unwrap_or_default(),
            new,
            files: 0,
        };
        self
    }

    /// What this build takes from the last: how many of its leading files are the
    /// same, how many pages it keeps as they are, for how many modules (so far) it
    /// knew the linker's values.
    pub fn reused(&self) -> (u64, u64, u64) {
        let page = self.window.page;
        let pages = self.kept.holes.iter().fold(0u64, |n, h| {
            let kept = h.end.saturating_sub(h.start).checked_div(page).unwrap_or(0);
            n.saturating_add(kept)
        });
        (self.kept.same as u64, pages, self.memos.known)
    }

    /// The end of the kept pages `offset` is in, if it is.
    fn hole_end(&self, offset: u64) -> Option<u64> {
        self.kept
            .holes
            .iter()
            .find(|h| h.start <= offset && offset < h.end)
            .map(|h| h.end)
    }

    /// Where the next kept pages after `offset` start, if any do.
    fn next_hole(&self, offset: u64) -> Option<u64> {
        self.kept
            .holes
            .iter()
            .filter(|h| h.start > offset)
            .map(|h| h.start)
            .min()
    }

    fn cursor(&mut self, part: usize) -> Result<&mut Cursor> {
        self.cursors.get_mut(part).ok_or(Error::Invalid)
    }

    /// Appends `bytes` to `part`; more than the part has room for means the files
    /// changed since the census.
    fn write(&mut self, part: usize, mut bytes: &[u8]) -> Result<()> {
        let Cursor { mut pos, end } = *self.cursor(part)?;
        if add_len(pos, bytes.len())? > end {
            return Err(Error::Changed);
        }
        while !bytes.is_empty() {
            if let Some(kept) = self.hole_end(pos) {
                // Already there.
                let n = usize::try_from(kept.saturating_sub(pos))
                    .map_or(bytes.len(), |n| n.min(bytes.len()));
                pos = add_len(pos, n)?;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let (slot, span) = self.window.span(pos, end)?;
            let n = span.len().min(bytes.len());
            let (now, rest) = bytes.split_at(n);
            span.get_mut(..n)
                .ok_or(Error::Invalid)?
                .copy_from_slice(now);
            self.window.filled(slot, n)?;
            pos = add_len(pos, n)?;
            bytes = rest;
            if n == 0 {
                return Err(Error::Invalid);
            }
        }
        self.cursor(part)?.pos = pos;
        Ok(())
    }

    /// Appends one linker file: its symbols (fixed up) and its string table.
    pub fn add(&mut self, file: &impl LinkerFile) -> Result<()> {
        self.start()?;
        let symbols = file.symbols()?;
        let strings = file.strings()?;
        let strsz = u64::try_from(strings.len()).map_err(|_| Error::TooLarge)?;
        let index = self.kept.files;
        self.kept.files = index.saturating_add(1);
        let held = match self.kept.old.and_then(|old| old.held(index)) {
            Some(h) if index < self.kept.same => {
                // The census walk met this file where it was; this one must too.
                if Some(h.key) != file.key()
                    || h.key.symbol_count != symbols.len() as u64
                    || h.key.string_bytes != strsz
                {
                    return Err(Error::Changed);
                }
                Some(*h)
            }
            _ => None,
        };
        let strtab = self.layout.strtab_offset;
        let base = self.cursors[STRINGS]
            .pos
            .checked_sub(strtab)
            .ok_or(Error::Invalid)?;
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
        if self.cursors[HEAD].pos == HEADER_SIZE {
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
        // Runs of symbols of one kind (local or not) go to their part: two runs for a
        // table with its locals first, as ELF has them. One loop per kind of file, so
        // the kernel's has no resolver call in it.
        let fix = Fix {
            base: base32,
            strsz: strsz32,
        };
        let mut values = if module {
            self.memos.begin(file)
        } else {
            Values::Ask
        };
        let v = &mut values;
        let (locals, ordered) = match held {
            Some(h) => {
                self.add_kept(file, symbols, &h, fix, v)?;
                (h.locals, true)
            }
            None => {
                let (mut locals, mut runs, mut local_first) = (0u64, 0u32, true);
                let mut done = 0usize;
                while let Some(first) = symbols.get(done) {
                    let local = first.is_local();
                    let run = self.put_run(module, local, file, symbols, done, fix, v)?;
                    if runs == 0 {
                        local_first = local;
                    }
                    runs = runs.saturating_add(1);
                    if local {
                        locals = add_len(locals, run)?;
                    }
                    done = done.checked_add(run).ok_or(Error::Invalid)?;
                }
                (locals, runs <= 1 || (runs == 2 && local_first))
            }
        };
        self.memos.end(values);
        self.write(STRINGS, strings)?;
        if let Some(new) = self.kept.new.as_deref_mut() {
            new.push(file.key().map(|key| Listed {
                key,
                locals,
                ordered: u64::from(ordered),
            }));
        }
        Ok(())
    }

    /// [`Writer::put`] for a run of the given kind, in a module or not.
    #[allow(clippy::too_many_arguments)]
    fn put_run<F: LinkerFile>(
        &mut self,
        module: bool,
        local: bool,
        file: &F,
        symbols: &[Elf64Sym],
        from: usize,
        fix: Fix,
        values: &mut Values<'_>,
    ) -> Result<usize> {
        match (module, local) {
            (false, true) => self.put::<_, false, true>(file, symbols, from, fix, values),
            (false, false) => self.put::<_, false, false>(file, symbols, from, fix, values),
            (true, true) => self.put::<_, true, true>(file, symbols, from, fix, values),
            (true, false) => self.put::<_, true, false>(file, symbols, from, fix, values),
        }
    }

    /// The symbols of a file the snapshot written over already holds (`held`, its
    /// table in ELF's order: its locals, then the others): those on kept pages are
    /// passed over, the others written as any file's.
    fn add_kept<F: LinkerFile>(
        &mut self,
        file: &F,
        symbols: &[Elf64Sym],
        held: &Listed,
        fix: Fix,
        values: &mut Values<'_>,
    ) -> Result<()> {
        let locals = usize::try_from(held.locals).map_err(|_| Error::Changed)?;
        if locals > symbols.len() {
            return Err(Error::Changed);
        }
        let module = !file.is_kernel();
        for (part, local, kind) in [
            (HEAD, true, 0..locals),
            (GLOBALS, false, locals..symbols.len()),
        ] {
            let mut next = kind.start;
            while next < kind.end {
                let pos = self.cursor(part)?.pos;
                let left = kind.end.saturating_sub(next);
                if let Some(kept) = self.hole_end(pos) {
                    // The symbols wholly on kept pages stay; one across their end
                    // is written (its bytes on the kept page are passed over).
                    let whole = kept.saturating_sub(pos) / SYM as u64;
                    let n = usize::try_from(whole).map_or(left, |w| w.min(left));
                    if n > 0 {
                        self.cursor(part)?.pos = add_len(pos, n.saturating_mul(SYM))?;
                        next = next.saturating_add(n);
                        continue;
                    }
                }
                // Up to the last symbol that starts before the next kept pages (at
                // least one symbol: `pos` is not on a kept page, or one starts
                // there that runs past it).
                let upto = match self.next_hole(pos) {
                    Some(start) => {
                        let before = start.saturating_sub(pos).div_ceil(SYM as u64);
                        next.saturating_add(usize::try_from(before).unwrap_or(left))
                    }
                    None => kind.end,
                };
                let upto = upto.max(next.saturating_add(1)).min(kind.end);
                let run = symbols.get(..upto).ok_or(Error::Invalid)?;
                let wrote = self.put_run(module, local, file, run, next, fix, values)?;
                next = next.saturating_add(wrote);
            }
        }
        Ok(())
    }

    /// Writes `symbols[from..]`, fixed up, into `part` up to the first symbol of the
    /// other kind; returns how many it wrote (at least one).
    ///
    /// Page by page: the symbols that fit whole in the rest of the page are fixed up
    /// into it by [`Fix::run`], which checks every one of them on the way and
    /// reports once for all; a symbol across a page boundary is fixed up on its own
    /// and written in two pieces.
    #[inline(always)]
    fn put<F: LinkerFile, const MODULE: bool, const LOCAL: bool>(
        &mut self,
        file: &F,
        symbols: &[Elf64Sym],
        from: usize,
        fix: Fix,
        values: &mut Values<'_>,
    ) -> Result<usize> {
        let part = if LOCAL { HEAD } else { GLOBALS };
        let Cursor { mut pos, end } = *self.cursor(part)?;
        let mut next = from;
        while let Some(run) = symbols
            .get(next..)
            .filter(|r| r.first().is_some_and(|s| s.is_local() == LOCAL))
        {
            if pos >= end {
                // A symbol for a part that is full: more than the census counted.
                return Err(Error::Changed);
            }
            let (slot, span) = if self.hole_end(pos).is_some() {
                // On a page kept as it is: a symbol across its end (write() passes
                // over its bytes on the kept page).
                (0, &mut [][..])
            } else {
                self.window.span(pos, end)?
            };
            let (dst, _) = span.as_chunks_mut::<SYM>();
            let (n, wanted) = if dst.is_empty() {
                // The next symbol does not fit the rest of the page (or of the part):
                // across the page boundary, or more symbols than counted.
                let one = run.get(..1).unwrap_or_default();
                let mut out = [[0u8; SYM]; 1];
                let n = fix.run::<F, MODULE, LOCAL>(file, next, one, &mut out, values)?;
                if n > 0 {
                    self.cursor(part)?.pos = pos;
                    self.write(part, out.as_flattened())?;
                    pos = self.cursor(part)?.pos;
                }
                (n, 1)
            } else {
                let run = run.get(..dst.len()).unwrap_or(run);
                let n = fix.run::<F, MODULE, LOCAL>(file, next, run, dst, values)?;
                // What was written from the first symbol of the other kind on (if
                // any) is not counted: the cursor does not pass it, and it gets
                // overwritten.
                let wrote = n.checked_mul(SYM).ok_or(Error::Invalid)?;
                self.window.filled(slot, wrote)?;
                pos = add_len(pos, wrote)?;
                (n, run.len())
            };
            next = next.checked_add(n).ok_or(Error::Invalid)?;
            if n < wanted {
                break;
            }
        }
        self.cursor(part)?.pos = pos;
        next.checked_sub(from)
            .filter(|&n| n > 0)
            .ok_or(Error::Invalid)
    }

    /// Checks that the file came out exactly as laid out (every symbol and string
    /// byte the census counted was written), zeroes the rest of the last page, and
    /// hands the last pages to the sink.
    pub fn finish(mut self) -> Result<SnapshotLayout> {
        self.start()?;
        if self.cursors.iter().any(|c| c.pos != c.end) {
            return Err(Error::Changed);
        }
        let layout = self.layout;
        if let Some(new) = self.kept.new.as_deref_mut() {
            new.seal(&layout);
        }
        // Every byte of the file is written; the rest of its last page gets zeros.
        let size = self.layout.size;
        if let Some(last) = size.checked_sub(1) {
            let index = last.checked_div(self.window.page).ok_or(Error::Invalid)?;
            if self.window.is_held(index) {
                let (slot, tail) = self.window.span(size, u64::MAX)?;
                tail.fill(0);
                let n = tail.len();
                self.window.filled(slot, n)?;
            }
        }
        if self.window.any_held() {
            return Err(Error::Invalid);
        }
        Ok(self.layout)
    }
}

/// The size of a symbol, for indexing bytes.
const SYM: usize = SYM_SIZE as usize;

/// The fix-ups of one file's symbols: names rebased by `base` and checked against
/// the file's string table of `strsz` bytes; section indices to SHN_ABS; a module's
/// values to the addresses its linker reports.
#[derive(Clone, Copy)]
struct Fix {
    base: u32,
    strsz: u32,
}

impl Fix {
    /// Writes `run` (the symbols of `file` from index `first` on), fixed up, into
    /// `dst`, as many as both have. Returns how many of them, from the first, are
    /// local if `LOCAL` is, and global or weak if not: the symbols of the run's part,
    /// whose bytes stand (those after them are to be overwritten). Fails with
    /// [`Error::BadLinkerFile`] when one of those names a string past its table.
    ///
    /// Each symbol is read once and written once, whole, in one tight loop with no
    /// branch on its contents: the checks are gathered on the way (the highest
    /// name; the bindings, the top four bits of `st_info`) and judged once at the
    /// end. Then, for a module, each symbol of the run's kind gets the value the
    /// linker reports (asked now, or learnt by an earlier build: `values`), patched
    /// in place.
    #[inline(always)]
    fn run<F: LinkerFile, const MODULE: bool, const LOCAL: bool>(
        self,
        file: &F,
        first: usize,
        run: &[Elf64Sym],
        dst: &mut [[u8; SYM]],
        values: &mut Values<'_>,
    ) -> Result<usize> {
        let mut names = 0u32;
        // Whether the run has a symbol of the other kind, gathered: for locals, the
        // first words ORed (a binding other than STB_LOCAL, 0, shows in BIND_BITS);
        // for the others, whether one had binding 0.
        let mut other = 0u64;
        // A module's values learnt as `st_value + delta` with no exception are
        // fixed up here; other values below.
        let delta = if MODULE { values.delta() } else { Some(0) };
        for (d, sym) in dst.iter_mut().zip(run) {
            let [head, value, size] = words(sym);
            let value = value.wrapping_add(delta.unwrap_or(0));
            other |= if LOCAL {
                head
            } else {
                u64::from(head & BIND_BITS == 0)
            };
            names = names.max((head >> NAME_SHIFT) as u32);
            // st_shndx to SHN_ABS (defined) or SHN_UNDEF, and st_name rebased: base +
            // st_name < base + strsz <= string_bytes <= u32::MAX whenever the name is
            // in its table, so the sum stays in st_name's bits; otherwise it may run
            // into st_info, and the attempt fails below.
            let shndx = if (head >> SHNDX_SHIFT) as u16 == SHN_UNDEF {
                SHN_UNDEF
            } else {
                SHN_ABS
            };
            let head = (head & !SHNDX_BITS).wrapping_add(u64::from(self.base) << NAME_SHIFT)
                | u64::from(shndx) << SHNDX_SHIFT;
            for (d, w) in d.as_chunks_mut::<8>().0.iter_mut().zip([head, value, size]) {
                *d = w.to_ne_bytes();
            }
        }
        let mut n = dst.len().min(run.len());
        if (if LOCAL { other & BIND_BITS } else { other }) != 0 {
            // A symbol of the other kind in the run (a table not in ELF's order): the
            // run ends before it.
            let mine = run.iter().take_while(|s| s.is_local() == LOCAL);
            n = mine.clone().count();
            names = mine.map(|s| s.st_name).max().unwrap_or(0);
        }
        if n > 0 && names >= self.strsz {
            return Err(Error::BadLinkerFile);
        }
        if MODULE && delta.is_none() {
            let dst = dst.get_mut(..n).unwrap_or_default();
            for (k, (d, sym)) in dst.iter_mut().zip(run).enumerate() {
                // first + k < symbols.len(): no overflow.
                if let Some(value) = values.value(file, first.wrapping_add(k), sym) {
                    put(d, VALUE, &value.to_ne_bytes());
                }
            }
        }
        Ok(n)
    }
}

/// Copies `bytes` into `dst` at `at`, when they fit (always, for the fields of a
/// symbol).
#[inline(always)]
fn put(dst: &mut [u8; SYM], at: usize, bytes: &[u8]) {
    if let Some(d) = at
        .checked_add(bytes.len())
        .and_then(|end| dst.get_mut(at..end))
    {
        d.copy_from_slice(bytes);
    }
}

/// Where st_value lies in a symbol.
const VALUE: usize = core::mem::offset_of!(Elf64Sym, st_value);

/// The first eight bytes of a symbol (st_name, st_info, st_other, st_shndx) as one
/// word read in the machine's byte order: where each field lies in it.
const NAME_SHIFT: u32 = if cfg!(target_endian = "little") {
    0
} else {
    32
};
const INFO_SHIFT: u32 = if cfg!(target_endian = "little") {
    32
} else {
    24
};
const SHNDX_SHIFT: u32 = if cfg!(target_endian = "little") {
    48
} else {
    0
};
const SHNDX_BITS: u64 = 0xffff << SHNDX_SHIFT;
/// The binding: the top four bits of st_info.
const BIND_BITS: u64 = 0xf0 << INFO_SHIFT;

/// A symbol as three words in the machine's byte order: the fields above, st_value,
/// st_size.
#[inline(always)]
fn words(sym: &Elf64Sym) -> [u64; 3] {
    let mut words = [0u64; 3];
    let bytes = as_bytes(core::slice::from_ref(sym));
    for (w, b) in words.iter_mut().zip(bytes.as_chunks::<8>().0) {
        *w = u64::from_ne_bytes(*b);
    }
    words
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
) -> Result<SnapshotLayout> {
    let mut writer = Writer::new(layout, target, sink)?;
    for file in files {
        writer.add(file)?;
    }
    writer.finish()
}
