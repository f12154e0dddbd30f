//! Keeping what the stale snapshot holds (src/kept.rs): a build over the stale
//! snapshot's pages that leaves the pages of its unchanged files as they are
//! writes the bytes of a build from scratch, and leaves the pages it should.

mod common;

use common::*;
use ksyms::elf::FREEBSD_AMD64;
use ksyms::kept::{Contents, Prefix};
use ksyms::snapshot::{self, Sink, SliceSink, Writer};
use ksyms::Result;
use std::collections::BTreeSet;

/// A small page, so that small tables span many pages.
const PAGE: usize = 256;

/// A sink over a buffer that notes the pages grabbed.
struct Noting<'a> {
    inner: SliceSink<'a>,
    grabbed: BTreeSet<u64>,
}

impl<'a> Sink for Noting<'a> {
    type Page = <SliceSink<'a> as Sink>::Page;
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn grab(&mut self, index: u64) -> Result<Self::Page> {
        assert!(self.grabbed.insert(index), "page {index} grabbed twice");
        self.inner.grab(index)
    }
    fn release(&mut self, page: Self::Page, complete: bool) {
        self.inner.release(page, complete)
    }
}

/// Builds the snapshot of `files` over `buf`, which holds the snapshot `old`
/// lists (or anything, without `old`), keeping what it can; lists what it wrote
/// in `new`. The bytes, and the pages grabbed.
fn build_over(
    buf: &mut Vec<u8>,
    files: &[Loaded],
    old: Option<&Contents>,
    new: &mut Contents,
) -> BTreeSet<u64> {
    let mut prefix = Prefix::new(old);
    for f in files {
        prefix.track(f);
    }
    let layout = snapshot::census(files).unwrap().layout().unwrap();
    // The object recycled: its pages past the new size go.
    buf.resize(layout.size() as usize, 0);
    let mut sink = Noting {
        inner: SliceSink::with_page_size(buf, PAGE),
        grabbed: BTreeSet::new(),
    };
    let mut writer = Writer::new(layout, &FREEBSD_AMD64, &mut sink)
        .unwrap()
        .keep(old, prefix.same(), Some(new));
    for f in files {
        writer.add(f).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), layout);
    sink.grabbed
}

fn module(name: &str, symbols: usize, rng: &mut Rng) -> SimFile {
    let mut f = SimFile::synthetic(name, false, symbols, 4, 24, rng);
    f.values = Values::Linked(0xffff_ffff_8300_0000);
    f
}

fn pages(bytes: usize) -> u64 {
    bytes.div_ceil(PAGE) as u64
}

/// At least the pages wholly inside the locals of `before`, the files before the
/// change, were kept (not grabbed), of the snapshot in `buf`.
fn assert_locals_kept(before: &[&SimFile], buf: &[u8], grabbed: &BTreeSet<u64>) {
    let locals: usize = before
        .iter()
        .map(|f| f.syms.iter().filter(|s| s.is_local()).count() * 24)
        .sum();
    let kept = pages(buf.len()) - grabbed.len() as u64;
    assert!(
        kept >= pages(locals) - 2,
        "{kept} pages kept of {locals} bytes of locals"
    );
}

/// Unloading the last module and loading it again keeps every page but those of
/// its own share and the page with the header; a kldload alone keeps the pages of
/// the locals before it; a module unloaded from the middle, those of the locals
/// of the files before it. The bytes are those of a build from scratch each time.
#[test]
fn unchanged_files_keep_their_pages() {
    let mut rng = Rng::new(21);
    let kernel = SimFile::synthetic("kernel", true, 900, 4, 24, &mut rng);
    let mods: Vec<SimFile> = (0..4)
        .map(|i| module(&format!("m{i}"), 200, &mut rng))
        .collect();
    let load = |set: &[(usize, u64)]| -> Vec<Loaded> {
        std::iter::once(Loaded::new(&kernel, 1))
            .chain(set.iter().map(|&(i, id)| Loaded::new(&mods[i], id)))
            .collect()
    };
    let mut buf = Vec::new();
    let mut old = Box::new(Contents::EMPTY);
    let mut new = Box::new(Contents::EMPTY);

    let first = load(&[(0, 2), (1, 3), (2, 4)]);
    let all = build_over(&mut buf, &first, None, &mut old);
    assert_eq!(
        all.len() as u64,
        pages(buf.len()),
        "a first build writes all"
    );
    assert_eq!(buf, build(&sim_files(&first)));
    assert_eq!(old.files(), 4);

    // m2 unloaded and loaded again (a new id): same counts, so every region
    // starts where it did, and only m2's share is written.
    let reload = load(&[(0, 2), (1, 3), (2, 5)]);
    let grabbed = build_over(&mut buf, &reload, Some(&old), &mut new);
    assert_eq!(buf, build(&sim_files(&reload)));
    let m2 = &mods[2];
    let share = m2.syms.len() * 24 + m2.strs.len();
    assert!(grabbed.contains(&0), "the header's page");
    assert!(
        grabbed.len() as u64 <= 1 + pages(share) + 6,
        "{} pages written for a share of {share} bytes",
        grabbed.len()
    );
    std::mem::swap(&mut old, &mut new);

    // A kldload: the locals of every file before it are kept.
    let loaded = load(&[(0, 2), (1, 3), (2, 5), (3, 6)]);
    let grabbed = build_over(&mut buf, &loaded, Some(&old), &mut new);
    assert_eq!(buf, build(&sim_files(&loaded)));
    assert_locals_kept(&[&kernel, &mods[0], &mods[1], &mods[2]], &buf, &grabbed);
    std::mem::swap(&mut old, &mut new);

    // m1 unloaded: the locals of the kernel and m0 are kept.
    let unloaded = load(&[(0, 2), (2, 5), (3, 6)]);
    let grabbed = build_over(&mut buf, &unloaded, Some(&old), &mut new);
    assert_eq!(buf, build(&sim_files(&unloaded)));
    assert_locals_kept(&[&kernel, &mods[0]], &buf, &grabbed);
}

/// The pages kept are the stale snapshot's, not written again: poisoned between
/// the builds, they show through. (Only a test can poison them: the kernel's
/// pages hold what the last build wrote.)
#[test]
fn kept_pages_are_not_written() {
    let mut rng = Rng::new(5);
    let kernel = SimFile::synthetic("kernel", true, 600, 4, 24, &mut rng);
    let m = module("m", 100, &mut rng);
    let files = [Loaded::new(&kernel, 1), Loaded::new(&m, 2)];
    let again = [Loaded::new(&kernel, 1), Loaded::new(&m, 3)];
    let (mut old, mut new) = (Box::new(Contents::EMPTY), Box::new(Contents::EMPTY));
    let mut buf = Vec::new();
    build_over(&mut buf, &files, None, &mut old);
    let want = buf.clone();
    buf.fill(0xa5);
    let grabbed = build_over(&mut buf, &again, Some(&old), &mut new);
    let poisoned: Vec<u64> = (0..pages(buf.len()))
        .filter(|p| {
            buf[*p as usize * PAGE..][..PAGE.min(buf.len() - *p as usize * PAGE)]
                .iter()
                .all(|&b| b == 0xa5)
        })
        .collect();
    assert!(!poisoned.is_empty(), "nothing kept");
    assert!(poisoned.iter().all(|p| !grabbed.contains(p)));
    assert_eq!(poisoned.len() + grabbed.len(), pages(want.len()) as usize);
}

/// A different file where the stale snapshot had another, or a table not in ELF's
/// order, ends what is kept; random module changes give the bytes of a build from
/// scratch every time.
#[test]
fn random_module_changes_give_the_bytes_of_a_full_build() {
    let mut rng = Rng::new(0x6b65_7074);
    let kernel = SimFile::synthetic("kernel", true, 700, 4, 24, &mut rng);
    let store: Vec<SimFile> = (0..10)
        .map(|i| {
            let n = 1 + rng.below(150) as usize;
            let mut f = module(&format!("m{i}"), n, &mut rng);
            if i % 5 == 4 {
                // Locals after globals: never kept.
                let g = f.syms.iter().position(|s| !s.is_local());
                if let Some(g) = g.filter(|&g| g > 1) {
                    f.syms.swap(g - 1, g);
                }
            }
            f
        })
        .collect();
    let mut set: Vec<(usize, u64)> = (0..4).map(|i| (i, i as u64 + 2)).collect();
    let mut next_id = 10;
    let mut buf = Vec::new();
    let (mut old, mut new) = (Box::new(Contents::EMPTY), Box::new(Contents::EMPTY));
    let mut kept_total = 0u64;
    for step in 0..80 {
        random_change(&mut rng, &mut set, store.len(), &mut next_id);
        let files: Vec<Loaded> = std::iter::once(Loaded::new(&kernel, 1))
            .chain(set.iter().map(|&(i, id)| Loaded::new(&store[i], id)))
            .collect();
        let grabbed = build_over(&mut buf, &files, Some(&old), &mut new);
        assert_eq!(buf, build(&sim_files(&files)), "step {step}");
        kept_total += pages(buf.len()) - grabbed.len() as u64;
        std::mem::swap(&mut old, &mut new);
    }
    assert!(kept_total > 200, "only {kept_total} pages kept in all");
}
