//! What the kernel linker reported for modules' symbols, remembered from one build
//! to the next.
//!
//! For every file but the kernel, a snapshot's `st_value` is what the kernel linker
//! reports for the symbol ([`LinkerFile::symbol_value`], one kobj call per symbol).
//! That was most of a build's own work: after a kldload, every symbol of every
//! module was asked again, although only the module just loaded is new.
//!
//! The answers for a loaded file do not change while it stays loaded: FreeBSD's
//! linkers derive them from the file's symbol table and its load address, both
//! fixed at load (link_elf reports the table value plus the load address,
//! link_elf_obj the table value, which it relocated at load; an ifunc symbol, its
//! resolver's choice, made from CPU features known at boot). So a build learns
//! each module's answers as it asks for them, in the compact form they take: one
//! `delta` such that the answer is `st_value + delta`, and the symbols where it is
//! not (no answer, or another one), listed. The next build meets the same file
//! (same linker file, load count, tables) and applies what it learnt without
//! asking. The load count (`lf->loadcnt`) comes from a counter that grows at every
//! linker file made, so a file unloaded and another loaded with the same id (the
//! id of the file loaded last goes to the next) at the same addresses, as malloc
//! may well give them, is a different file.
//!
//! A file whose answers do not fit that form ([`MEMO_EXCEPTIONS`] listed in all),
//! or one past the first [`MEMO_FILES`] modules, is asked at every build, as before.

use crate::elf::{Elf64Sym, Pod};
use crate::snapshot::LinkerFile;

/// A linker file as loaded: which file, and where its tables lie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileKey {
    /// The linker file's address and load count (`lf->loadcnt`: never reused,
    /// unlike its id).
    pub file: u64,
    pub load: u64,
    /// Its symbol table's address and length in symbols.
    pub symbols: u64,
    pub symbol_count: u64,
    /// Its string table's address and length in bytes.
    pub strings: u64,
    pub string_bytes: u64,
}

impl FileKey {
    /// No file (an empty slot).
    pub const ZERO: FileKey = FileKey {
        file: 0,
        load: 0,
        symbols: 0,
        symbol_count: 0,
        strings: 0,
        string_bytes: 0,
    };
}

/// Modules remembered by one [`ValueMemo`].
pub const MEMO_FILES: usize = 256;
/// Symbols of those modules whose answer is not `st_value + delta`, in all.
pub const MEMO_EXCEPTIONS: usize = 256;

/// One module's answers: `st_value + delta`, except at the listed symbols.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Learnt {
    key: FileKey,
    delta: u64,
    /// Its exceptions: `exception[first..first + count]`, by increasing index.
    first: u32,
    count: u32,
}

/// The answer for one symbol that is not `st_value + delta`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Exception {
    index: u32,
    /// 1 when the linker reported `value`, 0 when it reported none.
    found: u32,
    value: u64,
}

impl Exception {
    fn answer(&self) -> Option<u64> {
        (self.found != 0).then_some(self.value)
    }
}

/// What one build learnt about the modules it met. Plain data of fixed size
/// (about 20 KiB), allocated zeroed (which is empty) and kept with the cached
/// snapshot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ValueMemo {
    files: u32,
    exceptions: u32,
    file: [Learnt; MEMO_FILES],
    exception: [Exception; MEMO_EXCEPTIONS],
}

// SAFETY: repr(C) of two u32 and arrays of repr(C) records of integers without
// padding (FileKey: 6 x u64; Learnt: FileKey, u64, 2 x u32; Exception: 2 x u32, u64),
// asserted below: every bit pattern is valid, and all zeroes is the empty memo.
unsafe impl Pod for ValueMemo {}

static_assertions::const_assert_eq!(core::mem::size_of::<Learnt>(), 64);
static_assertions::const_assert_eq!(core::mem::size_of::<Exception>(), 16);
static_assertions::const_assert_eq!(
    core::mem::size_of::<ValueMemo>(),
    8 + 64 * MEMO_FILES + 16 * MEMO_EXCEPTIONS
);

impl ValueMemo {
    /// The empty memo.
    pub const EMPTY: ValueMemo = ValueMemo {
        files: 0,
        exceptions: 0,
        file: [Learnt {
            key: FileKey::ZERO,
            delta: 0,
            first: 0,
            count: 0,
        }; MEMO_FILES],
        exception: [Exception {
            index: 0,
            found: 0,
            value: 0,
        }; MEMO_EXCEPTIONS],
    };

    /// How many modules it remembers.
    pub fn files(&self) -> usize {
        self.files as usize
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.files = 0;
        self.exceptions = 0;
    }

    fn learnt(&self) -> &[Learnt] {
        self.file.get(..self.files as usize).unwrap_or_default()
    }

    fn exceptions_of(&self, l: &Learnt) -> &[Exception] {
        let first = l.first as usize;
        first
            .checked_add(l.count as usize)
            .and_then(|end| self.exception.get(first..end))
            .unwrap_or_default()
    }

    /// The entry for `key`, looked for from `hint` on (files come in the same order
    /// build after build, so the next one is usually there).
    fn find(&self, key: &FileKey, hint: usize) -> Option<(usize, &Learnt)> {
        let learnt = self.learnt();
        let hint = hint.min(learnt.len());
        let (before, after) = learnt.split_at(hint);
        after
            .iter()
            .zip(hint..)
            .chain(before.iter().zip(0..))
            .find(|(l, _)| l.key == *key)
            .map(|(l, i)| (i, l))
    }

    /// Appends an entry with these exceptions; false (and nothing kept) when full.
    fn push(&mut self, key: FileKey, delta: u64, exceptions: &[Exception]) -> bool {
        let first = self.exceptions as usize;
        let Some(dst) = first
            .checked_add(exceptions.len())
            .and_then(|end| self.exception.get_mut(first..end))
        else {
            return false;
        };
        dst.copy_from_slice(exceptions);
        self.exceptions += exceptions.len() as u32;
        self.seal(key, delta, first)
    }

    /// Makes the exceptions from `first` on those of a new entry for `key`; when
    /// there is no room for one, drops them and returns false.
    fn seal(&mut self, key: FileKey, delta: u64, first: usize) -> bool {
        let count = (self.exceptions as usize).saturating_sub(first);
        match self.file.get_mut(self.files as usize) {
            Some(slot) => {
                *slot = Learnt {
                    key,
                    delta,
                    first: first as u32,
                    count: count as u32,
                };
                self.files += 1;
                true
            }
            None => {
                self.exceptions = first as u32;
                false
            }
        }
    }
}

/// The memos of a build: what the last build learnt, and where this one writes
/// what it learns (emptied first).
pub(crate) struct Memos<'m> {
    old: Option<&'m ValueMemo>,
    new: Option<&'m mut ValueMemo>,
    /// Where the next file is likely to be in `old`.
    hint: usize,
    /// Files whose values were found in `old`.
    pub(crate) known: u64,
}

impl<'m> Memos<'m> {
    pub(crate) const NONE: Memos<'static> = Memos {
        old: None,
        new: None,
        hint: 0,
        known: 0,
    };

    pub(crate) fn new(old: Option<&'m ValueMemo>, mut new: Option<&'m mut ValueMemo>) -> Self {
        if let Some(new) = new.as_deref_mut() {
            new.clear();
        }
        Memos {
            old,
            new,
            hint: 0,
            known: 0,
        }
    }

    /// How the values of `file`, a module, are found in this build.
    pub(crate) fn begin<F: LinkerFile>(&mut self, file: &F) -> Values<'m> {
        let Some(key) = file.key().filter(|k| u32::try_from(k.symbol_count).is_ok()) else {
            return Values::Ask;
        };
        if let Some((at, l, old)) = self
            .old
            .and_then(|old| old.find(&key, self.hint).map(|(at, l)| (at, l, old)))
        {
            self.hint = at.saturating_add(1);
            self.known = self.known.saturating_add(1);
            let exceptions = old.exceptions_of(l);
            if let Some(new) = self.new.as_deref_mut() {
                // When full, the file is learnt again next time.
                let _ = new.push(key, l.delta, exceptions);
            }
            return Values::Known {
                delta: l.delta,
                exceptions,
            };
        }
        match self.new.take() {
            Some(memo) => {
                let first = memo.exceptions as usize;
                Values::Learn(Learner {
                    memo,
                    key,
                    delta: None,
                    first,
                    next: 0,
                    ok: true,
                })
            }
            None => Values::Ask,
        }
    }

    /// The end of `file`'s symbols: what was learnt is kept if it covers all of
    /// them.
    pub(crate) fn end(&mut self, values: Values<'m>) {
        if let Values::Learn(l) = values {
            if l.ok && l.next == l.key.symbol_count {
                let _ = l.memo.seal(l.key, l.delta.unwrap_or(0), l.first);
            } else {
                l.memo.exceptions = l.first as u32;
            }
            self.new = Some(l.memo);
        }
    }
}

/// Where a module's values come from in this build.
pub(crate) enum Values<'m> {
    /// The linker, asked for each symbol.
    Ask,
    /// What an earlier build learnt.
    Known {
        delta: u64,
        exceptions: &'m [Exception],
    },
    /// The linker, asked for each symbol, its answers learnt on the way.
    Learn(Learner<'m>),
}

pub(crate) struct Learner<'m> {
    memo: &'m mut ValueMemo,
    key: FileKey,
    delta: Option<u64>,
    /// Where this file's exceptions start in `memo`.
    first: usize,
    /// The index of the next symbol expected: every symbol once, in order.
    next: u64,
    ok: bool,
}

impl Learner<'_> {
    fn observe(&mut self, index: usize, st_value: u64, answer: Option<u64>) {
        if !self.ok {
            return;
        }
        if index as u64 != self.next {
            self.ok = false;
            return;
        }
        self.next = self.next.wrapping_add(1);
        let fits = match (answer, self.delta) {
            (Some(v), None) => {
                self.delta = Some(v.wrapping_sub(st_value));
                true
            }
            (Some(v), Some(d)) => v == st_value.wrapping_add(d),
            (None, _) => false,
        };
        if fits {
            return;
        }
        let at = self.memo.exceptions as usize;
        match self.memo.exception.get_mut(at) {
            // index < symbol_count <= u32::MAX (checked in begin).
            Some(slot) => {
                *slot = Exception {
                    index: index as u32,
                    found: u32::from(answer.is_some()),
                    value: answer.unwrap_or(0),
                };
                self.memo.exceptions += 1;
            }
            None => self.ok = false,
        }
    }
}

impl Values<'_> {
    /// The `delta` of every symbol's value, when the values are known to be
    /// `st_value + delta` without exception.
    #[inline(always)]
    pub(crate) fn delta(&self) -> Option<u64> {
        match self {
            Values::Known {
                delta,
                exceptions: [],
            } => Some(*delta),
            _ => None,
        }
    }

    /// The value the linker reports, or reported, for `sym`, symbol `index` of
    /// `file`.
    #[inline(always)]
    pub(crate) fn value<F: LinkerFile>(
        &mut self,
        file: &F,
        index: usize,
        sym: &Elf64Sym,
    ) -> Option<u64> {
        match self {
            Values::Ask => file.symbol_value(index, sym),
            Values::Known { delta, exceptions } => {
                if !exceptions.is_empty() {
                    if let Ok(at) = exceptions.binary_search_by_key(&index, |e| e.index as usize) {
                        return exceptions.get(at).and_then(Exception::answer);
                    }
                }
                Some(sym.st_value.wrapping_add(*delta))
            }
            Values::Learn(l) => {
                let answer = file.symbol_value(index, sym);
                l.observe(index, sym.st_value, answer);
                answer
            }
        }
    }
}
