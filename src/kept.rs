//! What a snapshot holds, file by file, so that the next build over its pages
//! keeps what has not changed.
//!
//! After a module change, the next build writes over the stale snapshot's pages
//! (`src/device.rs`, "Recycling"). The files before the first one that changed (the
//! kernel, and the modules loaded before that one) are the same linker files with
//! the same tables: their share of each region of the file is, byte for byte, what
//! the stale snapshot holds, wherever that region starts where it started: their
//! local symbols always (the locals follow the header), their other symbols when
//! the number of locals is unchanged, their strings when the number of symbols is.
//! The writer leaves the pages wholly inside those ranges as they are, neither
//! grabbing nor writing them, and writes the rest. After a module is unloaded and
//! loaded again (the usual cycle of a module in development), that is all but that
//! module's share; after a kldload alone, the locals of every file loaded before.
//!
//! A file is the same when its linker file, load count and tables are
//! ([`FileKey`]: load counts are never reused while the kernel runs, and a loaded
//! file's tables do not change).
//! Only files whose table is in ELF's order (locals first) are kept, so that where
//! each of their symbols lies follows from their counts.

use crate::elf::Pod;
use crate::snapshot::{LinkerFile, SnapshotLayout, HEADER_SIZE};
use crate::values::FileKey;

/// Files described by one [`Contents`]: the leading ones of a snapshot.
pub const KEPT_FILES: usize = 256;

/// One file of a snapshot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) key: FileKey,
    /// How many of its symbols are local.
    pub(crate) locals: u64,
    /// 1 when its locals come first (ELF's order), else 0.
    pub(crate) ordered: u64,
}

/// The leading files of a snapshot, in order, and its totals. Plain data of fixed
/// size (about 16 KiB), allocated zeroed (which is empty).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Contents {
    files: u64,
    /// The snapshot's totals, as its layout has them.
    symbols: u64,
    locals: u64,
    string_bytes: u64,
    /// Set once a file could not be listed: later ones are not listed either.
    closed: u64,
    file: [Listed; KEPT_FILES],
}

// SAFETY: repr(C) of u64s and an array of Listed (FileKey: 6 x u64, then 2 x u64),
// no padding (asserted below); every bit pattern is valid, all zeroes is empty.
unsafe impl Pod for Contents {}

static_assertions::const_assert_eq!(core::mem::size_of::<Listed>(), 64);
static_assertions::const_assert_eq!(core::mem::size_of::<Contents>(), 40 + 64 * KEPT_FILES);

impl Contents {
    /// Nothing listed.
    pub const EMPTY: Contents = Contents {
        files: 0,
        symbols: 0,
        locals: 0,
        string_bytes: 0,
        closed: 0,
        file: [Listed {
            key: FileKey::ZERO,
            locals: 0,
            ordered: 0,
        }; KEPT_FILES],
    };

    /// How many files it lists.
    pub fn files(&self) -> usize {
        self.files as usize
    }

    pub(crate) fn clear(&mut self) {
        self.files = 0;
        self.closed = 0;
    }

    pub(crate) fn held(&self, index: usize) -> Option<&Listed> {
        self.file.get(..self.files as usize)?.get(index)
    }

    /// Lists the next file (None: a file that cannot be known again, after which
    /// nothing more is listed).
    pub(crate) fn push(&mut self, held: Option<Listed>) {
        match (self.closed, held, self.file.get_mut(self.files as usize)) {
            (0, Some(held), Some(slot)) => {
                *slot = held;
                self.files += 1;
            }
            _ => self.closed = 1,
        }
    }

    /// Records the totals of the snapshot the files were written into.
    pub(crate) fn seal(&mut self, layout: &SnapshotLayout) {
        self.symbols = layout.symbols();
        self.locals = layout.locals();
        self.string_bytes = layout.string_bytes();
    }
}

/// The census walk's count of the files, from the first, that `old` lists in the
/// same order and keeps (the same file, its table in ELF's order).
pub struct Prefix<'c> {
    old: Option<&'c Contents>,
    seen: usize,
    same: usize,
}

impl<'c> Prefix<'c> {
    pub fn new(old: Option<&'c Contents>) -> Self {
        Prefix {
            old,
            seen: 0,
            same: 0,
        }
    }

    /// Counts one more file of the walk.
    pub fn track(&mut self, file: &impl LinkerFile) {
        let held = self.old.and_then(|old| old.held(self.seen));
        if self.same == self.seen
            && held.is_some_and(|h| h.ordered != 0 && Some(h.key) == file.key())
        {
            self.same += 1;
        }
        self.seen = self.seen.saturating_add(1);
    }

    /// How many leading files are the same.
    pub fn same(&self) -> usize {
        self.same
    }
}

/// A range of the file's bytes, `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// The pages a build keeps, as byte ranges (whole pages): at most one per region.
pub(crate) fn holes(old: &Contents, same: usize, layout: &SnapshotLayout, page: u64) -> [Span; 3] {
    let none = [Span::default(); 3];
    let Some(files) = old.file.get(..same.min(old.files as usize)) else {
        return none;
    };
    let mut shares = [0u64; 3];
    for h in files {
        let others = h.key.symbol_count.checked_sub(h.locals);
        let add = [
            h.locals.checked_mul(SYM),
            others.and_then(|o| o.checked_mul(SYM)),
            Some(h.key.string_bytes),
        ];
        for (share, n) in shares.iter_mut().zip(add) {
            match n.and_then(|n| share.checked_add(n)) {
                Some(v) => *share = v,
                None => return none,
            }
        }
    }
    let starts = [
        Some(HEADER_SIZE),
        Some(layout.globals_offset()).filter(|_| layout.locals() == old.locals),
        Some(layout.strtab_offset()).filter(|_| layout.symbols() == old.symbols),
    ];
    let mut out = none;
    for ((slot, start), share) in out.iter_mut().zip(starts).zip(shares) {
        let Some((start, end)) = start.and_then(|s| Some((s, s.checked_add(share)?))) else {
            continue;
        };
        // Whole pages only; a page shared with bytes to write is written whole.
        let first = start.div_ceil(page).checked_mul(page);
        let last = (end / page).checked_mul(page);
        if let (Some(first), Some(last)) = (first, last) {
            if first < last {
                *slot = Span {
                    start: first,
                    end: last,
                };
            }
        }
    }
    out
}

const SYM: u64 = core::mem::size_of::<crate::elf::Elf64Sym>() as u64;
