//! Which linker file each symbol came from, recovered from the snapshot.
//!
//! The snapshot does not name its linker files, but it keeps their traces: each
//! file's string table is appended whole, in the kernel's order, and each file's
//! null symbol (all fields zero) keeps `st_name` 0 of its own table, which the
//! rebase turns into the offset where that file's strings start. So the null
//! symbols, in table order, give the string-table boundaries of the files, and a
//! symbol belongs to the file whose strings hold its name.
//!
//! A file gets a label from its symbols: the first file is the kernel; for the
//! others, the modules they declare (`DECLARE_MODULE(name, ...)` leaves a static
//! `_<name>_depend_on_kernel` in every module), else the first `STT_FILE` symbol
//! (the source file name), else `?`.

use crate::elfread::ElfSymbols;
use ksyms::elf::{Elf64Sym, STT_FILE};

/// One linker file as recovered from the string table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpan {
    /// Offset in `.strtab` where the file's strings start.
    pub str_start: u32,
    /// One past its last string byte.
    pub str_end: u32,
    /// What the file's symbols say it is.
    pub label: String,
}

/// Whether `sym` is a null symbol (every field zero but the rebased `st_name`).
pub fn is_null_entry(sym: &Elf64Sym) -> bool {
    sym.st_info == 0
        && sym.st_other == 0
        && sym.st_shndx == 0
        && sym.st_value == 0
        && sym.st_size == 0
}

/// The linker files of `snap`, in order; the first always starts at offset 0.
pub fn recover(snap: &ElfSymbols<'_>) -> Vec<FileSpan> {
    let strsz = u32::try_from(snap.strtab.len()).unwrap_or(u32::MAX);
    let mut starts: Vec<u32> = vec![0];
    for sym in snap.syms.iter().filter(|s| is_null_entry(s)) {
        let at = sym.st_name;
        let Some(last) = starts.last().copied() else {
            continue;
        };
        // A table starts with a NUL byte and follows the previous table's final NUL.
        let starts_table = snap.strtab.get(at as usize) == Some(&0)
            && (at == 0 || snap.strtab.get(at as usize - 1) == Some(&0));
        if at > last && at < strsz && starts_table {
            starts.push(at);
        }
    }
    let mut spans: Vec<FileSpan> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| FileSpan {
            str_start: s,
            str_end: starts.get(i + 1).copied().unwrap_or(strsz),
            label: String::new(),
        })
        .collect();
    label(snap, &mut spans);
    spans
}

/// The index in `spans` of the file holding the name at `st_name`.
pub fn file_of(spans: &[FileSpan], st_name: u32) -> usize {
    // Spans are sorted by start and the first starts at 0.
    spans
        .partition_point(|s| s.str_start <= st_name)
        .saturating_sub(1)
}

fn label(snap: &ElfSymbols<'_>, spans: &mut [FileSpan]) {
    let n = spans.len();
    let mut modules: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut source: Vec<Option<String>> = vec![None; n];
    for sym in &snap.syms {
        let f = file_of(spans, sym.st_name);
        let Some(name) = snap.name_bytes(sym) else {
            continue;
        };
        let name = String::from_utf8_lossy(name);
        if let Some(m) = name
            .strip_prefix('_')
            .and_then(|r| r.strip_suffix("_depend_on_kernel"))
        {
            if !m.is_empty() && !modules[f].iter().any(|x| x == m) {
                modules[f].push(m.to_string());
            }
        }
        if sym.kind() == STT_FILE && !name.is_empty() && source[f].is_none() {
            source[f] = Some(name.into_owned());
        }
    }
    for (i, span) in spans.iter_mut().enumerate() {
        span.label = if i == 0 {
            "kernel".to_string()
        } else if !modules[i].is_empty() {
            let shown: Vec<&str> = modules[i].iter().take(3).map(String::as_str).collect();
            let more = modules[i].len() - shown.len();
            if more > 0 {
                format!("{} +{more}", shown.join(","))
            } else {
                shown.join(",")
            }
        } else if let Some(src) = source[i].take() {
            src
        } else {
            "?".to_string()
        };
    }
}
