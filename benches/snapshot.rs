//! Kernel-scale snapshot against memcpy of the same number of bytes.
//!
//! 60,000 kernel symbols and 40 modules of 1,500 symbols each, names of 10 to 40
//! bytes, held in memory as the kernel linker holds them. One round is what an open
//! does: the census walk, then the writing walk into a preallocated buffer
//! (SliceSink) with the kernel's scratch size (256 entries). In the same run, a plain
//! `copy_from_slice` of as many bytes. Prints bytes/s for both and their ratio.
//!
//! Run: `cargo bench --bench snapshot` (or `sh tests/bench.sh`). Takes a few seconds.

#[allow(dead_code)]
#[path = "../tests/sim/files.rs"]
mod files;

use files::{info, Rng, SimFile, Values, KERNEL_BASE, MODULE_BASE, SHN_UNDEF};
use ksyms::elf::{Elf64Sym, FREEBSD_AMD64};
use ksyms::snapshot::{self, LinkerFile, SliceSink};
use ksyms::Result;
use std::hint::black_box;
use std::time::{Duration, Instant};

const KERNEL_SYMBOLS: usize = 60_000;
const MODULES: usize = 40;
const MODULE_SYMBOLS: usize = 1_500;
/// What src/device.rs gives the writer.
const SCRATCH: usize = 256;

/// `locals_first`: each file's locals before its other symbols, as in every ELF
/// symbol table a linker writes (sh_info), so as the kernel linker holds them; else
/// bindings in random order, the writer's worst case.
/// A file as the engine sees it, with the least a kernel linker does per symbol
/// (the callback's cost is part of what is measured, so no checks beyond
/// link_elf_obj's): undefined resolves to nothing, else the load address of the
/// symbol's section plus its value.
struct Held<'a>(&'a SimFile);

impl LinkerFile for Held<'_> {
    fn is_kernel(&self) -> bool {
        self.0.is_kernel_file()
    }
    fn symbols(&self) -> Result<&[Elf64Sym]> {
        Ok(&self.0.syms)
    }
    fn strings(&self) -> Result<&[u8]> {
        Ok(&self.0.strs)
    }
    fn symbol_value(&self, _index: usize, sym: &Elf64Sym) -> Option<u64> {
        match &self.0.values {
            Values::Sections { bases, .. } if sym.st_shndx != SHN_UNDEF => bases
                .get(usize::from(sym.st_shndx))
                .copied()
                .flatten()
                .map(|base| base.wrapping_add(sym.st_value)),
            _ => None,
        }
    }
}

/// A module resolves a defined symbol to the load address of its section (sections
/// 1 to 8, 64 KiB apart from `base`) plus its value, as link_elf_obj's symbol_values
/// does.
fn file(rng: &mut Rng, kernel: bool, count: usize, base: u64, locals_first: bool) -> SimFile {
    let mut syms = vec![Elf64Sym::default()];
    let mut strs = vec![0u8];
    for _ in 1..count {
        let st_name = strs.len() as u32;
        let len = 10 + rng.below(31) as usize;
        strs.extend((0..len).map(|_| b'a' + rng.below(26) as u8));
        strs.push(0);
        // About one local in three, as in a real kernel; a few undefined in modules.
        let bind = if rng.below(3) == 0 {
            0
        } else {
            1 + rng.below(2) as u8
        };
        let kind = 1 + rng.below(2) as u8;
        let shndx = if !kernel && rng.below(20) == 0 {
            0
        } else {
            1 + rng.below(8) as u16
        };
        syms.push(Elf64Sym {
            st_name,
            st_info: info(bind, kind),
            st_other: 0,
            st_shndx: shndx,
            st_value: if kernel {
                KERNEL_BASE + rng.below(1 << 24)
            } else {
                rng.below(1 << 16)
            },
            st_size: rng.below(1024),
        });
    }
    if locals_first {
        syms.sort_by_key(|s| s.st_info >> 4 != 0);
    }
    let values = if kernel {
        Values::Absolute
    } else {
        Values::Sections {
            bases: (0..9).map(|s| Some(base + s * 0x1_0000)).collect(),
            common: base + 9 * 0x1_0000,
        }
    };
    SimFile::new(if kernel { "kernel" } else { "module" }, syms, strs, values)
}

/// Best and median of `rounds` timings of `f`.
fn time(rounds: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut t: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    (t[0], t[rounds / 2])
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64()
}

fn files(locals_first: bool) -> Vec<SimFile> {
    let mut rng = Rng(0x006b_7379_6d73);
    let mut files = vec![file(&mut rng, true, KERNEL_SYMBOLS, 0, locals_first)];
    for m in 0..MODULES as u64 {
        let base = MODULE_BASE + m * 0x100_0000;
        files.push(file(&mut rng, false, MODULE_SYMBOLS, base, locals_first));
    }
    files
}

/// Census + write of `files` into `out`, as an open does.
fn build(files: &[Held<'_>], out: &mut [u8], scratch: &mut [Elf64Sym]) {
    let layout = snapshot::census(black_box(files))
        .and_then(|c| c.layout())
        .expect("layout");
    snapshot::write(files, layout, &FREEBSD_AMD64, &mut SliceSink(out), scratch).expect("write");
    black_box(out);
}

fn copy(src: &[u8], dst: &mut [u8]) {
    dst.copy_from_slice(black_box(src));
    black_box(dst);
}

fn report(what: &str, size: u64, best: Duration, median: Duration) {
    println!(
        "{what:<44} best {:>7.3} ms {:>6.2} GB/s   median {:>7.3} ms {:>6.2} GB/s",
        best.as_secs_f64() * 1e3,
        rate(size, best) / 1e9,
        median.as_secs_f64() * 1e3,
        rate(size, median) / 1e9
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run once.
    let quick = !std::env::args().any(|a| a == "--bench");
    let tables = [files(true), files(false)];
    let sets: Vec<Vec<Held<'_>>> = tables
        .iter()
        .map(|t| t.iter().map(Held).collect())
        .collect();
    let layout = snapshot::census(&sets[0])
        .and_then(|c| c.layout())
        .expect("layout");
    let size = layout.size();
    let mut out = vec![0u8; size as usize];
    let mut scratch = vec![Elf64Sym::default(); SCRATCH];
    let src = vec![0x5au8; size as usize];
    let mut dst = vec![0u8; size as usize];

    // Warm up (page faults, caches), then interleave the measurements in blocks so
    // that all three see the same machine; best of all rounds, median of medians.
    for set in &sets {
        build(set, &mut out, &mut scratch);
    }
    copy(&src, &mut dst);
    let rounds = if quick { 1 } else { 25 };
    let blocks = if quick { 1 } else { 8 };
    let mut best = [Duration::MAX; 3];
    let mut medians: [Vec<Duration>; 3] = Default::default();
    for _ in 0..blocks {
        for (k, set) in sets.iter().enumerate() {
            let (b, m) = time(rounds, || build(set, &mut out, &mut scratch));
            best[k] = best[k].min(b);
            medians[k].push(m);
        }
        let (b, m) = time(rounds, || copy(&src, &mut dst));
        best[2] = best[2].min(b);
        medians[2].push(m);
    }
    let median: Vec<Duration> = medians
        .iter_mut()
        .map(|v| {
            v.sort();
            v[v.len() / 2]
        })
        .collect();

    println!(
        "snapshot of {} symbols ({KERNEL_SYMBOLS} kernel + {MODULES} modules x {MODULE_SYMBOLS}), {} string bytes: {size} bytes",
        layout.symbols(),
        layout.string_bytes()
    );
    report(
        "snapshot, locals first per file (as in ELF)",
        size,
        best[0],
        median[0],
    );
    report(
        "snapshot, bindings interleaved (worst case)",
        size,
        best[1],
        median[1],
    );
    report(
        "memcpy (copy_from_slice) of as many bytes",
        size,
        best[2],
        median[2],
    );
    let pct = |a: Duration, b: Duration| 100.0 * b.as_secs_f64() / a.as_secs_f64();
    println!(
        "ratio to memcpy: locals first best {:.1}% median {:.1}%; interleaved best {:.1}% median {:.1}%",
        pct(best[0], best[2]),
        pct(median[0], median[2]),
        pct(best[1], best[2]),
        pct(median[1], median[2])
    );
}
