//! The snapshot engine (src/snapshot.rs) on real ELF inputs and on synthetic tables:
//! exact header, every symbol once with the right name and value, locals first,
//! section indices, the string table, the errors, and property tests.

mod common;

use common::*;
use ksyms::elf::{Elf64Sym, FREEBSD_AMD64};
use ksyms::snapshot::{self, Census, Sink, SliceSink, SnapshotLayout, Writer};
use ksyms::{Error, Result};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Real inputs
// ---------------------------------------------------------------------------

/// The inputs hold every kind of symbol the engine must handle; without this, the
/// other tests could pass on inputs too poor to exercise the fix-ups.
#[test]
fn inputs_cover_every_kind_of_symbol() {
    let files = &inputs().files;
    assert_eq!(files.len(), 5);
    assert!(files[0].is_kernel_file());
    let kinds =
        |f: &SimFile, pred: &dyn Fn(&Elf64Sym) -> bool| f.syms.iter().filter(|s| pred(s)).count();
    let k = &files[0];
    assert!(kinds(k, &|s| s.st_info >> 4 == STB_LOCAL) > 30);
    assert!(kinds(k, &|s| s.st_info >> 4 == STB_GLOBAL) > 30);
    assert!(kinds(k, &|s| s.st_info >> 4 == STB_WEAK) > 30);
    assert!(kinds(k, &|s| s.st_info & 0xf == STT_GNU_IFUNC) >= 1);
    assert!(k
        .syms
        .iter()
        .all(|s| s.st_value == 0 || s.st_value >= KERNEL_BASE || s.st_shndx == SHN_ABS));
    for (m, f) in files[1..].iter().enumerate() {
        assert!(!f.is_kernel_file());
        assert!(
            kinds(f, &|s| s.st_shndx == SHN_UNDEF && s.st_name != 0) >= 3,
            "module {m}: undefined"
        );
        assert!(
            kinds(f, &|s| s.st_shndx == SHN_COMMON) >= 4,
            "module {m}: common"
        );
        assert!(
            kinds(f, &|s| s.st_info & 0xf == STT_SECTION) >= 1,
            "module {m}: section"
        );
        assert!(
            kinds(f, &|s| s.st_info & 0xf == STT_FILE) == 1,
            "module {m}: file"
        );
        assert!(
            kinds(f, &|s| s.st_info >> 4 == STB_WEAK) >= 10,
            "module {m}: weak"
        );
        assert!(
            kinds(f, &|s| s.st_info >> 4 == STB_LOCAL) >= 10,
            "module {m}: local"
        );
        // Relocatable: defined symbols are section-relative, so the fix-up changes them.
        let moved = (0..f.syms.len())
            .filter(|&i| f.resolve(i).is_some_and(|v| v != f.syms[i].st_value))
            .count();
        assert!(moved > 40, "module {m}: only {moved} symbols move");
    }
    assert!(kinds(&files[2], &|s| s.st_info & 0xf == STT_GNU_IFUNC) >= 1);
    // Locals and globals interleave across files, so "locals first" is a real reorder.
    let total: usize = files.iter().map(|f| f.syms.len()).sum();
    assert!(total > 500, "{total} symbols");
}

#[test]
fn real_inputs_snapshot_is_exact() {
    let files = &inputs().files;
    let bytes = build(files);
    check_snapshot(files, &bytes);
}

/// Values checked by name through the object crate's own reading of the inputs (not
/// through the records the engine was given): the kernel's unchanged, a module's
/// the load address of its section plus the symbol's offset.
#[test]
fn values_by_name_match_an_independent_reading() {
    use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SymbolSection};
    let inp = inputs();
    let files = &inp.files;
    let bytes = build(files);
    let snap = object::File::parse(&*bytes).unwrap();
    // name -> values in the snapshot
    let mut by_name: std::collections::HashMap<Vec<u8>, Vec<u64>> = Default::default();
    for s in snap.symbols() {
        by_name
            .entry(s.name_bytes().unwrap().to_vec())
            .or_default()
            .push(s.address());
    }
    let kdata = std::fs::read(&inp.kernel_path).unwrap();
    let kobj = object::File::parse(&*kdata).unwrap();
    let mut checked = 0;
    for s in kobj.symbols() {
        let name = s.name_bytes().unwrap();
        if name.is_empty() {
            continue;
        }
        let got = &by_name[name];
        assert!(
            got.contains(&s.address()),
            "kernel {:?}: {got:x?} vs {:#x}",
            s.name(),
            s.address()
        );
        checked += 1;
    }
    for (m, path) in inp.module_paths.iter().enumerate() {
        let data = std::fs::read(path).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        // Section load addresses, recomputed from the section list.
        let mut cursor = MODULE_BASE + m as u64 * MODULE_STRIDE;
        let mut base = std::collections::HashMap::new();
        for sec in obj.sections() {
            let SectionFlags::Elf { sh_flags } = sec.flags() else {
                unreachable!()
            };
            if sh_flags & 2 != 0 {
                let a = sec.align().max(1);
                cursor = cursor.div_ceil(a) * a;
                base.insert(sec.index(), cursor);
                cursor += sec.size().max(1);
            }
        }
        for s in obj.symbols() {
            let name = s.name_bytes().unwrap();
            if name.is_empty() {
                continue;
            }
            let got = &by_name[name];
            let want = match s.section() {
                SymbolSection::Section(i) => base[&i] + s.address(),
                _ => continue,
            };
            assert!(
                got.contains(&want),
                "module {m} {:?}: {got:x?} vs {want:#x}",
                s.name()
            );
            assert!(want >= MODULE_BASE + m as u64 * MODULE_STRIDE);
            checked += 1;
        }
    }
    assert!(checked > 400, "{checked}");
}

// ---------------------------------------------------------------------------
// Header, empty and synthetic sets
// ---------------------------------------------------------------------------

#[test]
fn no_files_gives_the_header_alone() {
    let files: Vec<SimFile> = Vec::new();
    let bytes = build(&files);
    assert_eq!(bytes.len(), 464);
    parse_checked(&bytes, 0, 0, 0);
}

#[test]
fn empty_tables_among_files() {
    let mut rng = Rng(7);
    let mut files = vec![synthetic(&mut rng, "kernel", true, 40, 1, 12)];
    // No symbols, no strings; no symbols but strings; strings of empty names only.
    files.push(SimFile::new("empty", vec![], vec![], Values::Table(vec![])));
    files.push(SimFile::new(
        "strings only",
        vec![],
        b"\0abc\0".to_vec(),
        Values::Table(vec![]),
    ));
    files.push(synthetic(&mut rng, "m1", false, 30, 0, 5));
    files.push(SimFile::new(
        "null only",
        vec![Elf64Sym::default()],
        b"\0".to_vec(),
        Values::Table(vec![None]),
    ));
    let bytes = build(&files);
    check_snapshot(&files, &bytes);
}

/// A symbol set at the scale of a small kernel.
fn large_set() -> Vec<SimFile> {
    let mut rng = Rng(0x5eed);
    let mut files = vec![synthetic(&mut rng, "kernel", true, 30_000, 1, 40)];
    for m in 0..25 {
        files.push(synthetic(
            &mut rng,
            &format!("m{m}"),
            false,
            200 + 100 * m,
            1,
            40,
        ));
    }
    files
}

#[test]
fn large_synthetic_set_is_exact() {
    let files = large_set();
    let bytes = build(&files);
    check_snapshot(&files, &bytes);
    // Strings of the kernel alone over many pages.
    assert!(files[0].strs.len() > 16 * snapshot::PAGE_SIZE);
}

/// Pages of `page` bytes as the kernel's VM object has them: the last one whole,
/// past the end of the file. Each page starts out as garbage; it is copied into
/// `bytes` when given back complete. Records every grab, and refuses (like the
/// kernel, which would deadlock or find it valid) a page grabbed twice.
struct CoverageSink {
    page: usize,
    size: usize,
    bytes: Vec<u8>,
    grabs: Vec<u32>,
    complete: Vec<bool>,
    /// Pages grabbed and not given back.
    held: usize,
    /// The highest page index asked for.
    max_index: Option<u64>,
    /// Grab calls, and the one to fail (1 = the first), if any.
    calls: usize,
    fail_at: usize,
}

const GARBAGE: u8 = 0xa5;

impl CoverageSink {
    fn new(size: u64, page: usize) -> Self {
        let size = size as usize;
        let pages = size.div_ceil(page);
        CoverageSink {
            page,
            size,
            bytes: vec![GARBAGE; size],
            grabs: vec![0; pages],
            complete: vec![false; pages],
            held: 0,
            max_index: None,
            calls: 0,
            fail_at: 0,
        }
    }

    /// Every page of the file grabbed once and given back complete, none held.
    fn all_complete(&self) -> bool {
        self.grabs.iter().all(|&g| g == 1) && self.complete.iter().all(|&c| c) && self.held == 0
    }
}

struct CoveragePage {
    index: usize,
    buf: Vec<u8>,
}

impl snapshot::Page for CoveragePage {
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Sink for CoverageSink {
    type Page = CoveragePage;

    fn page_size(&self) -> usize {
        self.page
    }

    fn grab(&mut self, index: u64) -> Result<CoveragePage> {
        self.calls += 1;
        self.max_index = self.max_index.max(Some(index));
        if self.calls == self.fail_at {
            return Err(Error::Kernel(12));
        }
        let i = index as usize;
        if i >= self.grabs.len() {
            return Err(Error::TooLarge);
        }
        self.grabs[i] += 1;
        if self.grabs[i] > 1 {
            return Err(Error::Invalid);
        }
        self.held += 1;
        Ok(CoveragePage {
            index: i,
            buf: vec![GARBAGE; self.page],
        })
    }

    fn release(&mut self, page: CoveragePage, complete: bool) {
        self.held -= 1;
        if !complete {
            return;
        }
        self.complete[page.index] = true;
        let at = page.index * self.page;
        let n = self.page.min(self.size - at);
        self.bytes[at..at + n].copy_from_slice(&page.buf[..n]);
        assert!(
            page.buf[n..].iter().all(|&b| b == 0),
            "the last page's tail is not zeroed"
        );
    }
}

#[test]
fn every_byte_written_exactly_once() {
    for files in [inputs().files.clone(), large_set()] {
        for page in [1usize, 7, 24, 25, 4096] {
            let layout = snapshot::census(&files).unwrap().layout().unwrap();
            let mut sink = CoverageSink::new(layout.size(), page);
            snapshot::write(&files, layout, &FREEBSD_AMD64, &mut sink).unwrap();
            assert!(sink.all_complete(), "page {page}: a page not filled once");
            check_snapshot(&files, &sink.bytes);
        }
    }
}

/// A VM object's pages as `Batched` sees them, refusing what the kernel would not do:
/// a page grabbed while busy (a deadlock), a page released twice or not grabbed.
struct Runs {
    page: usize,
    data: Vec<u8>,
    /// Per page: 0 never grabbed, 1 busy, 2 written, 3 given back unwritten.
    state: Vec<u8>,
    grabs: usize,
    releases: usize,
}

// SAFETY: each page handed out is `page` bytes inside `data`, which is neither
// resized nor touched otherwise while pages are out.
unsafe impl snapshot::PageRuns for Runs {
    type Handle = usize;

    fn page_size(&self) -> usize {
        self.page
    }

    fn grab(&mut self, first: u64, out: &mut [(usize, std::ptr::NonNull<u8>)]) -> Result<usize> {
        self.grabs += 1;
        let mut n = 0;
        while n < out.len() && first as usize + n < self.state.len() {
            let i = first as usize + n;
            assert_ne!(self.state[i], 1, "page {i} grabbed while busy");
            // The kernel would hand it out again: a run must stop before it.
            assert_ne!(self.state[i], 2, "page {i} grabbed after it was written");
            self.state[i] = 1;
            let va = std::ptr::NonNull::new(self.data[i * self.page..].as_mut_ptr()).unwrap();
            out[n] = (i, va);
            n += 1;
        }
        if n == 0 {
            Err(Error::Invalid)
        } else {
            Ok(n)
        }
    }

    unsafe fn release(&mut self, pages: &[usize], complete: bool) {
        self.releases += 1;
        for &i in pages {
            assert_eq!(self.state[i], 1, "page {i} released but not held");
            self.state[i] = if complete { 2 } else { 3 };
        }
    }
}

/// Pages in runs (the kernel's way): the same bytes as page by page, every page
/// grabbed once and written, and far fewer calls than pages. With pages of 8 or
/// 464 bytes, where each part of the file starts on a page of its own, no run
/// reaches a page already written.
#[test]
fn batched_pages_give_the_same_bytes_in_few_calls() {
    for files in [inputs().files.clone(), large_set()] {
        for page in [7usize, 8, 24, 464, 4096] {
            let layout = snapshot::census(&files).unwrap().layout().unwrap();
            let size = layout.size() as usize;
            let pages = size.div_ceil(page);
            let mut runs = Runs {
                page,
                data: vec![0xa5; pages * page],
                state: vec![0; pages],
                grabs: 0,
                releases: 0,
            };
            {
                let mut sink = snapshot::Batched::new(&mut runs, layout.size());
                snapshot::write(&files, layout, &FREEBSD_AMD64, &mut sink).unwrap();
            }
            assert!(
                runs.state.iter().all(|&s| s == 2),
                "page {page}: a page not written"
            );
            assert_eq!(runs.data[..size], build_with(&files, page).unwrap()[..]);
            assert!(runs.data[size..].iter().all(|&b| b == 0), "tail not zeroed");
            // A run of its own for each of the three parts.
            assert!(
                runs.grabs + runs.releases <= pages.div_ceil(4) + 2,
                "page {page}: {} grabs and {} releases for {pages} pages",
                runs.grabs,
                runs.releases
            );
        }
    }
}

/// A write that fails half-way gives every page back, none of them as written
/// after the failure, and grabs no page twice.
#[test]
fn batched_pages_all_go_back_after_a_failure() {
    let files = &inputs().files;
    let mut changed = files.clone();
    changed.pop();
    let layout = snapshot::census(files).unwrap().layout().unwrap();
    let pages = (layout.size() as usize).div_ceil(64);
    let mut runs = Runs {
        page: 64,
        data: vec![0xa5; pages * 64],
        state: vec![0; pages],
        grabs: 0,
        releases: 0,
    };
    {
        let mut sink = snapshot::Batched::new(&mut runs, layout.size());
        let r = snapshot::write(&changed, layout, &FREEBSD_AMD64, &mut sink);
        assert_eq!(r, Err(Error::Changed));
    }
    assert!(runs.state.iter().all(|&s| s != 1), "a page left busy");
    assert!(runs.state.contains(&3), "no page given back unwritten");
}

#[test]
fn page_size_does_not_change_the_bytes() {
    for files in [inputs().files.clone(), large_set()] {
        let reference = build_with(&files, 1 << 30).unwrap();
        for page in [1usize, 2, 3, 7, 23, 24, 64, 4096, 4097] {
            let bytes = build_with(&files, page).unwrap();
            assert!(bytes == reference, "page {page} gives other bytes");
        }
    }
}

#[test]
fn page_size_zero_is_refused() {
    assert_eq!(build_with(&inputs().files, 0), Err(Error::Invalid));
}

/// A table whose locals do not all come first: the writer puts each symbol where
/// its binding says, whatever the order; the ordered census miscounts it, and then
/// the writer finds the parts overflowing or unfilled (Error::Changed).
#[test]
fn locals_out_of_order_are_placed_by_binding() {
    let files = &inputs().files;
    let mut mixed = files.clone();
    // In one module, the last local and the first global trade places.
    let f = &mut mixed[2];
    let g = f.syms.iter().position(|s| !s.is_local()).unwrap();
    assert!(g > 1);
    f.syms.swap(g - 1, g);
    // The exact census: the same symbols as in order.
    check_snapshot(&mixed, &build(&mixed));
    // The ordered census counts locals up to the first global.
    let mut ordered = Census::default();
    for f in &mixed {
        ordered.add_ordered(f).unwrap();
    }
    let exact = snapshot::census(&mixed).unwrap();
    assert_ne!(ordered.locals, exact.locals);
    let layout = ordered.layout().unwrap();
    let mut sink = CoverageSink::new(layout.size(), 4096);
    let r = snapshot::write(&mixed, layout, &FREEBSD_AMD64, &mut sink);
    assert_eq!(r, Err(Error::Changed));
    assert_eq!(sink.held, 0, "pages left held after the failure");
    // On tables in ELF order (the real inputs), both censuses agree.
    let mut ordered = Census::default();
    let mut exact = Census::default();
    for f in files {
        ordered.add_ordered(f).unwrap();
        exact.add(f).unwrap();
    }
    assert_eq!(ordered, exact);
}

// ---------------------------------------------------------------------------
// A changing set of files
// ---------------------------------------------------------------------------

/// Census of `before`, write of `after` in pages of `page` bytes; no page past the
/// layout is ever asked for, and none is left held.
fn census_then_write(before: &[SimFile], after: &[SimFile], page: usize) -> Result<SnapshotLayout> {
    let layout = snapshot::census(before)?.layout()?;
    let mut sink = CoverageSink::new(layout.size(), page);
    let r = snapshot::write(after, layout, &FREEBSD_AMD64, &mut sink);
    let pages = layout.size().div_ceil(page as u64);
    assert!(
        sink.max_index.is_none_or(|i| i < pages),
        "page {:?} asked for, past the {pages} pages of the layout",
        sink.max_index
    );
    assert_eq!(sink.held, 0, "pages left held");
    if r.is_ok() {
        assert!(sink.all_complete());
    }
    r
}

fn with_symbol(f: &SimFile, bind: u8) -> SimFile {
    let mut g = f.clone();
    g.syms.push(Elf64Sym {
        st_name: 0,
        st_info: info(bind, STT_FUNC),
        st_shndx: SHN_ABS,
        st_value: 1,
        ..Default::default()
    });
    if let Values::Table(v) = &mut g.values {
        v.push(None);
    }
    g
}

#[test]
fn changed_file_set_is_detected() {
    let base: Vec<SimFile> = {
        let mut rng = Rng(99);
        let mut v = vec![synthetic(&mut rng, "kernel", true, 500, 1, 30)];
        for m in 0..5 {
            v.push(synthetic(
                &mut rng,
                &format!("m{m}"),
                false,
                50 + 30 * m,
                1,
                30,
            ));
        }
        v
    };
    let mut rng = Rng(1234);
    let extra = synthetic(&mut rng, "extra", false, 40, 1, 30);
    let mut cases: Vec<(&str, Vec<SimFile>, Vec<SimFile>)> = Vec::new();
    let mut added = base.clone();
    added.push(extra.clone());
    cases.push(("file added at the end", base.clone(), added.clone()));
    let mut added_mid = base.clone();
    added_mid.insert(2, extra.clone());
    cases.push(("file added in the middle", base.clone(), added_mid));
    cases.push(("file removed at the end", added.clone(), base.clone()));
    let mut removed_mid = base.clone();
    removed_mid.remove(3);
    cases.push(("file removed in the middle", base.clone(), removed_mid));
    for (what, bind) in [
        ("local", STB_LOCAL),
        ("global", STB_GLOBAL),
        ("weak", STB_WEAK),
    ] {
        let mut grown = base.clone();
        grown[4] = with_symbol(&base[4], bind);
        cases.push((
            if bind == STB_LOCAL {
                "table grown by a local"
            } else if what == "global" {
                "table grown by a global"
            } else {
                "table grown by a weak"
            },
            base.clone(),
            grown.clone(),
        ));
        cases.push(("table shrunk", grown, base.clone()));
    }
    let mut more_strings = base.clone();
    more_strings[1].strs.extend_from_slice(b"late_name\0");
    cases.push(("string table grown", base.clone(), more_strings.clone()));
    cases.push(("string table shrunk", more_strings, base.clone()));
    // A local turned global: same totals per file, other split between the runs.
    let mut rebound = base.clone();
    let idx = rebound[2]
        .syms
        .iter()
        .position(|s| s.st_info >> 4 == STB_LOCAL && s.st_name != 0)
        .unwrap();
    rebound[2].syms[idx].st_info = info(STB_GLOBAL, STT_FUNC);
    cases.push(("local turned global", base.clone(), rebound.clone()));
    cases.push(("global turned local", rebound, base.clone()));

    for (what, before, after) in &cases {
        for page in [1usize, 5, 24, 4096, 1 << 24] {
            assert_eq!(
                census_then_write(before, after, page),
                Err(Error::Changed),
                "{what}, page {page}"
            );
        }
        // The same sets, unchanged, write fine: the failure is the change.
        assert!(census_then_write(after, after, 7).is_ok(), "{what}");
    }
}

/// The kernel's own walk: Census::add and Writer::add one file at a time.
#[test]
fn census_and_writer_one_file_at_a_time() {
    let files = &inputs().files;
    let mut census = Census::default();
    for f in files {
        census.add(f).unwrap();
    }
    assert_eq!(census.files, files.len() as u64);
    assert_eq!(
        census.symbols,
        files.iter().map(|f| f.syms.len() as u64).sum::<u64>()
    );
    let layout = census.layout().unwrap();
    let mut buf = vec![0u8; layout.size() as usize];
    let mut sink = SliceSink::new(&mut buf);
    let mut w = Writer::new(layout, &FREEBSD_AMD64, &mut sink).unwrap();
    for f in files {
        w.add(f).unwrap();
    }
    assert_eq!(w.finish().unwrap(), layout);
    check_snapshot(files, &buf);
}

// ---------------------------------------------------------------------------
// Malformed linker files, sizes that do not fit, failing sinks
// ---------------------------------------------------------------------------

fn one_module(syms: Vec<Elf64Sym>, strs: &[u8]) -> Vec<SimFile> {
    let mut rng = Rng(3);
    let kernel = synthetic(&mut rng, "kernel", true, 10, 1, 8);
    let n = syms.len();
    vec![
        kernel,
        SimFile::new("bad", syms, strs.to_vec(), Values::Table(vec![None; n])),
    ]
}

fn named(st_name: u32) -> Elf64Sym {
    Elf64Sym {
        st_name,
        st_info: info(STB_GLOBAL, STT_FUNC),
        st_shndx: 1,
        st_value: 16,
        st_size: 8,
        ..Default::default()
    }
}

#[test]
fn name_past_the_string_table_is_refused() {
    let strs = b"\0foo\0bar\0"; // 9 bytes
                                // The last byte (index 8, the final NUL) is a valid, empty name.
    let ok = one_module(vec![Elf64Sym::default(), named(5), named(8)], strs);
    check_snapshot(&ok, &build(&ok));
    for st_name in [9u32, 10, 1000, u32::MAX] {
        let bad = one_module(vec![Elf64Sym::default(), named(1), named(st_name)], strs);
        for page in [2usize, 4096] {
            assert_eq!(
                build_with(&bad, page),
                Err(Error::BadLinkerFile),
                "st_name {st_name}"
            );
        }
    }
    // In the kernel too.
    let mut k = one_module(vec![], b"");
    let past = k[0].strs.len() as u32;
    k[0].syms.push(named(past));
    assert_eq!(build_with(&k, 4096), Err(Error::BadLinkerFile));
}

/// A kernel and a module with their locals first (as ELF has them), each with
/// hundreds of locals and of globals: runs of many pages.
fn ordered_pair() -> Vec<SimFile> {
    let mut rng = common::Rng::new(0x0bad);
    let files = vec![
        SimFile::synthetic("kernel", true, 3_000, 4, 30, &mut rng),
        SimFile::synthetic("mod", false, 2_000, 4, 30, &mut rng),
    ];
    for f in &files {
        let locals = f.syms.partition_point(|s| s.is_local());
        assert!(f.syms[locals..].iter().all(|s| !s.is_local()));
        assert!(
            locals > 300 && f.syms.len() - locals > 600,
            "{locals} locals"
        );
    }
    files
}

/// The writer checks the names of a page's worth of symbols at once, after fixing
/// them up: a name past its table is refused wherever its symbol lies (deep in a
/// run, last in a run or in its page, across a page boundary), in the kernel and in
/// a module, local or not; a name at the table's last byte is fine there.
#[test]
fn name_past_the_table_is_refused_anywhere_in_a_run() {
    let files = ordered_pair();
    // The kernel's local 151 is written at 464 + 151 * 24 = 4088: across the end of
    // the first 4 KiB page. With pages of 25 bytes, most symbols straddle one.
    let across = 151;
    const {
        assert!(snapshot::HEADER_SIZE + 151 * 24 < 4096);
        assert!(snapshot::HEADER_SIZE + 152 * 24 > 4096);
    }
    for f in 0..files.len() {
        let n = files[f].syms.len();
        let locals = files[f].syms.partition_point(|s| s.is_local());
        let last = files[f].strs.len() as u32 - 1;
        for at in [across, locals / 2, locals - 1, locals, locals + 300, n - 1] {
            for (st_name, ok) in [(last, true), (last + 1, false), (u32::MAX, false)] {
                let mut bad = files.clone();
                bad[f].syms[at].st_name = st_name;
                for page in [24usize, 25, 4096] {
                    let r = build_with(&bad, page);
                    if ok {
                        check_snapshot(&bad, &r.unwrap());
                    } else {
                        assert_eq!(r, Err(Error::BadLinkerFile), "file {f}, symbol {at}");
                    }
                }
            }
        }
    }
}

/// A linker file that counts the values asked of it.
struct Counting<'a> {
    file: &'a SimFile,
    asked: std::cell::Cell<usize>,
}

impl snapshot::LinkerFile for Counting<'_> {
    fn is_kernel(&self) -> bool {
        self.file.is_kernel_file()
    }
    fn symbols(&self) -> Result<&[Elf64Sym]> {
        self.file.symbols()
    }
    fn strings(&self) -> Result<&[u8]> {
        self.file.strings()
    }
    fn symbol_value(&self, index: usize, sym: &Elf64Sym) -> Option<u64> {
        self.asked.set(self.asked.get() + 1);
        self.file.symbol_value(index, sym)
    }
}

/// The linker is asked for each module symbol's value once (as FreeBSD's driver
/// does), never for the kernel's: also when a table's kind changes inside a page,
/// whose symbols of the other kind are fixed up and then written again elsewhere.
#[test]
fn module_values_are_asked_once_per_symbol() {
    let mut mixed = inputs().files.clone();
    let f = &mut mixed[2];
    let g = f.syms.iter().position(|s| !s.is_local()).unwrap();
    f.syms.swap(g - 1, g);
    for files in [inputs().files.clone(), mixed, ordered_pair()] {
        for page in [7usize, 24, 4096] {
            let counted: Vec<Counting> = files
                .iter()
                .map(|file| Counting {
                    file,
                    asked: Default::default(),
                })
                .collect();
            let layout = snapshot::census(&counted).unwrap().layout().unwrap();
            let mut buf = vec![0u8; layout.size() as usize];
            let mut sink = SliceSink::with_page_size(&mut buf, page);
            snapshot::write(&counted, layout, &FREEBSD_AMD64, &mut sink).unwrap();
            check_snapshot(&files, &buf);
            for c in &counted {
                let want = if c.file.is_kernel_file() {
                    0
                } else {
                    c.file.syms.len()
                };
                assert_eq!(c.asked.get(), want, "{}, page {page}", c.file.name);
            }
        }
    }
}

#[test]
fn unterminated_string_table_is_refused() {
    let bad = one_module(vec![Elf64Sym::default(), named(1)], b"\0foo");
    assert_eq!(build_with(&bad, 4096), Err(Error::BadLinkerFile));
    let empty = one_module(vec![Elf64Sym::default()], b"");
    assert_eq!(build_with(&empty, 4096), Err(Error::BadLinkerFile));
    // Terminated, it is fine.
    let good = one_module(vec![Elf64Sym::default(), named(1)], b"\0foo\0");
    check_snapshot(&good, &build(&good));
}

#[test]
fn first_symbol_must_be_null() {
    let mut files = one_module(vec![Elf64Sym::default()], b"\0");
    files[0].syms[0] = Elf64Sym {
        st_name: 1,
        st_info: info(STB_LOCAL, STT_OBJECT),
        st_shndx: 1,
        ..Default::default()
    };
    assert_eq!(build_with(&files, 4096), Err(Error::BadLinkerFile));
}

/// Without a single local, no file brought its null symbol: entry 0 would be a
/// global. Such a set is refused before anything is written.
#[test]
fn symbols_without_any_local_are_refused() {
    let files = vec![SimFile::new(
        "kernel without its null symbol",
        vec![named(1), named(5)],
        b"\0foo\0bar\0".to_vec(),
        Values::Absolute,
    )];
    let layout = snapshot::census(&files).unwrap().layout().unwrap();
    let mut sink = CoverageSink::new(layout.size(), 4096);
    let r = snapshot::write(&files, layout, &FREEBSD_AMD64, &mut sink);
    assert_eq!(r, Err(Error::BadLinkerFile));
    assert_eq!(sink.calls, 0, "a refused set must not reach the sink");
}

#[test]
fn layouts_that_overflow_are_too_large() {
    let max_size = i64::MAX as u64;
    let max_syms = (max_size - 464) / 24;
    let rem = max_size - 464 - 24 * max_syms;
    let cases: [(u64, u64, u64); 7] = [
        (u64::MAX, 0, 0),
        (u64::MAX / 24 + 1, 0, 0),
        (max_syms + 1, 0, 0),
        (max_syms, 0, rem + 1),
        (0, 0, u64::from(u32::MAX) + 1),
        (10, 11, 0),
        (u64::from(u32::MAX) + 2, u64::from(u32::MAX) + 1, 0),
    ];
    for (s, l, b) in cases {
        assert_eq!(
            SnapshotLayout::new(s, l, b),
            Err(Error::TooLarge),
            "({s}, {l}, {b})"
        );
    }
    // The largest that fit.
    let l = SnapshotLayout::new(max_syms, 5, rem).unwrap();
    assert_eq!(l.size(), max_size);
    let l = SnapshotLayout::new(3, 3, u64::from(u32::MAX)).unwrap();
    assert_eq!(l.strtab_offset(), 464 + 72);
    assert_eq!(l.size(), 464 + 72 + u64::from(u32::MAX));
    let l = SnapshotLayout::new(u64::from(u32::MAX), u64::from(u32::MAX), 0).unwrap();
    assert_eq!(l.locals(), u64::from(u32::MAX));
    // Through the census.
    let c = Census {
        files: 1,
        symbols: u64::MAX,
        locals: 0,
        string_bytes: 0,
    };
    assert_eq!(c.layout(), Err(Error::TooLarge));
}

#[test]
fn sink_errors_stop_the_write() {
    let files = &inputs().files;
    let layout = snapshot::census(files).unwrap().layout().unwrap();
    for n in [1usize, 2, 3, 10, 50] {
        let mut sink = CoverageSink::new(layout.size(), 64);
        sink.fail_at = n;
        let r = snapshot::write(files, layout, &FREEBSD_AMD64, &mut sink);
        assert_eq!(r, Err(Error::Kernel(12)), "failing grab {n}");
        assert_eq!(sink.calls, n, "grabs went on after the failure");
        assert_eq!(sink.held, 0, "pages left held after the failure");
    }
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// One random linker file: a seed expands it (so that big counts stay cheap to
/// generate and shrink), with random bindings, types, section indices, empty names,
/// names shared by tail, and resolved or unresolved values.
#[derive(Clone, Debug)]
struct FileSpec {
    count: usize,
    seed: u64,
    empty_names: bool,
}

fn file_from(spec: &FileSpec, kernel: bool) -> SimFile {
    let mut rng = Rng(spec.seed | 1);
    let mut strs = Vec::new();
    let mut syms = Vec::new();
    let mut values = Vec::new();
    if spec.count > 0 {
        strs.push(0);
        syms.push(Elf64Sym::default());
        values.push(None);
    }
    let mut starts: Vec<u32> = Vec::new();
    for _ in 1..spec.count {
        let st_name = if spec.empty_names || rng.below(10) == 0 {
            0
        } else if !starts.is_empty() && rng.below(5) == 0 {
            // A tail of an earlier name (string tables share suffixes).
            let s = starts[rng.below(starts.len() as u64) as usize];
            let len = strs[s as usize..].iter().position(|&b| b == 0).unwrap() as u32;
            s + rng.below(u64::from(len) + 1) as u32
        } else {
            let s = strs.len() as u32;
            let len = rng.below(48);
            for _ in 0..len {
                strs.push(b'!' + ((rng.next() >> 7) % 94) as u8);
            }
            strs.push(0);
            starts.push(s);
            s
        };
        let bind = rng.below(3) as u8; // local, global, weak
        let kind = [0u8, 1, 2, 3, 4, 6, 10][rng.below(7) as usize];
        let shndx = [SHN_UNDEF, 1, 2, 7, 0x1234, SHN_ABS, SHN_COMMON][rng.below(7) as usize];
        syms.push(Elf64Sym {
            st_name,
            st_info: info(bind, kind),
            st_other: rng.below(4) as u8,
            st_shndx: shndx,
            st_value: rng.next(),
            st_size: rng.next() >> rng.below(64),
        });
        values.push(if rng.below(3) == 0 {
            None
        } else {
            Some(rng.next())
        });
    }
    SimFile::new(
        &format!("seed {}", spec.seed),
        syms,
        strs,
        if kernel {
            Values::Absolute
        } else {
            Values::Table(values)
        },
    )
}

fn file_spec() -> impl Strategy<Value = FileSpec> {
    (
        prop_oneof![
            3 => 0usize..4,
            6 => 4usize..200,
            1 => 2000usize..20_000,
        ],
        any::<u64>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(count, seed, empty_names)| FileSpec {
            count,
            seed,
            empty_names,
        })
}

/// Checks a snapshot through the object crate's ELF reader.
fn check_with_object(files: &[SimFile], bytes: &[u8], layout_size: u64) {
    use object::{Object, ObjectSymbol};
    assert_eq!(bytes.len() as u64, layout_size);
    let elf =
        object::read::elf::ElfFile64::<object::Endianness>::parse(bytes).expect("snapshot parses");
    let mut got: Vec<(Vec<u8>, u64, u64)> = elf
        .symbols()
        .map(|s| (s.name_bytes().unwrap().to_vec(), s.address(), s.size()))
        .collect();
    // The object crate skips entry 0, the null symbol of the first file with symbols.
    let mut want: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    let mut skipped_null = false;
    for f in files {
        for i in 0..f.syms.len() {
            if !skipped_null {
                skipped_null = true;
                continue;
            }
            let v = if f.is_kernel_file() {
                f.syms[i].st_value
            } else {
                f.expected_value(i)
            };
            want.push((
                f.name(i).expect("input name").to_vec(),
                v,
                f.syms[i].st_size,
            ));
        }
    }
    got.sort();
    want.sort();
    assert!(
        got == want,
        "symbols differ: {} got, {} wanted",
        got.len(),
        want.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_file_sets(
        kernel in file_spec().prop_filter("kernel has its null symbol", |s| s.count > 0),
        modules in prop::collection::vec(file_spec(), 0..12),
        page in 1usize..300,
    ) {
        let mut files = vec![file_from(&kernel, true)];
        files.extend(modules.iter().map(|m| file_from(m, false)));
        let layout = snapshot::census(&files).unwrap().layout().unwrap();
        let bytes = build_with(&files, page).unwrap();
        check_with_object(&files, &bytes, layout.size());
        check_snapshot(&files, &bytes);
    }
}

// ---------------------------------------------------------------------------
// Architectures
// ---------------------------------------------------------------------------

/// The same linker files give, for each architecture of the table, a snapshot that
/// says that architecture in e_ident and e_machine (the numbers of elf(5), not the
/// crate's) and is otherwise byte for byte the amd64 one: layout, symbols and
/// strings do not depend on the machine.
#[test]
fn every_architecture_writes_its_own_machine_and_the_same_tables() {
    let files = inputs().files.clone();
    let layout = snapshot::census(&files).unwrap().layout().unwrap();
    let write = |target| {
        let mut out = vec![0u8; layout.size() as usize];
        snapshot::write(&files, layout, target, &mut SliceSink::new(&mut out)).unwrap();
        out
    };
    let amd64 = write(&FREEBSD_AMD64);
    let expected = [("amd64", 62u16), ("arm64", 183)];
    assert_eq!(ksyms::elf::TARGETS.len(), expected.len());
    for (target, (name, machine)) in ksyms::elf::TARGETS.iter().zip(expected) {
        assert_eq!(target.name, name);
        assert_eq!(target.page_size, 4096, "{name}");
        let b = write(target);
        assert_eq!(&b[..4], b"\x7fELF", "{name}");
        assert_eq!((b[4], b[5], b[7]), (2, 1, 9), "{name}: ELF64, LSB, FreeBSD");
        assert_eq!(u16_at(&b, 18), machine, "{name}: e_machine");
        let mut same = b.clone();
        same[18..20].copy_from_slice(&amd64[18..20]);
        assert!(
            same == amd64,
            "{name}: more than e_machine differs from amd64"
        );
    }
    // The crate's own architecture, as ksyms.ko is built, is one of them.
    assert!(ksyms::elf::TARGETS.contains(&ksyms::elf::NATIVE));
}
