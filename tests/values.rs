//! The memo of modules' values (src/values.rs): a build given what the last one
//! learnt writes the same bytes as one that asks the linker of every symbol, and
//! asks only of the files the last build did not meet or could not remember.

mod common;

use common::*;
use ksyms::elf::FREEBSD_AMD64;
use ksyms::snapshot::{self, SliceSink, Writer, PAGE_SIZE};
use ksyms::values::{ValueMemo, MEMO_EXCEPTIONS, MEMO_FILES};

/// The snapshot of `files`, taking values from `old` and learning into `new`; the
/// values asked of each file are reset first.
fn build(files: &[Loaded], old: Option<&ValueMemo>, new: Option<&mut ValueMemo>) -> Vec<u8> {
    for f in files {
        f.asked.set(0);
    }
    let layout = snapshot::census(files).unwrap().layout().unwrap();
    let mut buf = vec![0u8; layout.size() as usize];
    let mut sink = SliceSink::with_page_size(&mut buf, PAGE_SIZE);
    let mut writer = Writer::new(layout, &FREEBSD_AMD64, &mut sink)
        .unwrap()
        .remember(old, new);
    for f in files {
        writer.add(f).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), layout);
    buf
}

fn empty() -> Box<ValueMemo> {
    Box::new(ValueMemo::EMPTY)
}

/// A module loaded at `base`, as FreeBSD's link_elf reports its symbols: all at
/// `base + st_value`.
fn module(name: &str, symbols: usize, base: u64, rng: &mut Rng) -> SimFile {
    let mut f = SimFile::synthetic(name, false, symbols, 4, 24, rng);
    f.values = Values::Linked(base);
    f
}

/// A module whose linker reports defined symbols at `base + st_value`, absolute
/// ones at `st_value` and nothing for undefined ones: those two kinds are the
/// exceptions of its memo entry.
fn module_with_exceptions(name: &str, symbols: usize, base: u64, rng: &mut Rng) -> SimFile {
    let mut f = SimFile::synthetic(name, false, symbols, 4, 24, rng);
    f.values = Values::Base(base);
    f
}

fn kernel(rng: &mut Rng) -> SimFile {
    SimFile::synthetic("kernel", true, 300, 4, 24, rng)
}

/// What the linker reports, learnt in one build, gives the next the same bytes
/// without asking; a file reloaded (new id) or new is asked, and a module whose
/// answers are mostly not `st_value + delta` (one per symbol) is never remembered.
#[test]
fn learnt_values_give_the_same_bytes_without_asking() {
    let mut rng = Rng::new(7);
    let k = kernel(&mut rng);
    let mut mods: Vec<SimFile> = (0..5)
        .map(|i| {
            let base = 0xffff_ffff_8300_0000 + i * 0x10_0000;
            module_with_exceptions(&format!("m{i}"), 60, base, &mut rng)
        })
        .collect();
    // An ifunc-like outlier in m1: an answer that is neither none nor base + value.
    let outlier = mods[1]
        .syms
        .iter()
        .position(|s| s.st_shndx > 0 && s.st_shndx < 0xff00)
        .unwrap();
    let mut table: Vec<Option<u64>> = (0..mods[1].syms.len())
        .map(|i| mods[1].resolve(i))
        .collect();
    table[outlier] = Some(0xffff_ffff_8123_4560);
    mods[1].values = Values::Table(table);
    // Random answers: one exception per symbol, more than a memo holds.
    let random = SimFile::synthetic("random", false, 2 * MEMO_EXCEPTIONS, 4, 24, &mut rng);

    let loaded: Vec<Loaded> = std::iter::once(&k)
        .chain(&mods)
        .chain([&random])
        .zip(1..)
        .map(|(f, id)| Loaded::new(f, id))
        .collect();
    let (mut first, mut second) = (empty(), empty());
    let plain = build(&loaded, None, None);
    check_snapshot(&sim_files(&loaded), &plain);
    let learnt = build(&loaded, None, Some(&mut first));
    assert_eq!(learnt, plain);
    for f in &loaded[1..] {
        assert_eq!(f.asked.get(), f.file.syms.len(), "{}", f.file.name);
    }
    assert_eq!(first.files(), mods.len(), "every module but the random one");

    let again = build(&loaded, Some(&first), Some(&mut second));
    assert_eq!(
        again, plain,
        "the remembered values differ from the linker's"
    );
    for f in &loaded[1..loaded.len() - 1] {
        assert_eq!(f.asked.get(), 0, "{} asked again", f.file.name);
    }
    let random_asked = loaded.last().unwrap().asked.get();
    assert_eq!(
        random_asked,
        random.syms.len(),
        "the random module is asked"
    );
    assert_eq!(second.files(), mods.len(), "what was known is passed on");

    // m2 reloaded (a new id), m3 unloaded, a new module loaded.
    let fresh = module("fresh", 80, 0xffff_ffff_8400_0000, &mut rng);
    let changed: Vec<Loaded> = [(&k, 1), (&mods[0], 2), (&mods[1], 3), (&mods[4], 6)]
        .into_iter()
        .chain([(&mods[2], 8), (&fresh, 9)])
        .map(|(f, id)| Loaded::new(f, id))
        .collect();
    let mut third = empty();
    let bytes = build(&changed, Some(&second), Some(&mut third));
    let asked: Vec<usize> = changed[1..].iter().map(|f| f.asked.get()).collect();
    assert_eq!(asked, [0, 0, 0, mods[2].syms.len(), fresh.syms.len()]);
    assert_eq!(bytes, build(&changed, None, None));
    check_snapshot(&sim_files(&changed), &bytes);
    assert_eq!(third.files(), 5);
}

/// Past [`MEMO_FILES`] modules, the rest are asked at every build, with the right
/// bytes.
#[test]
fn modules_past_the_memo_are_asked_every_time() {
    let mut rng = Rng::new(11);
    let k = kernel(&mut rng);
    let mods: Vec<SimFile> = (0..MEMO_FILES as u64 + 3)
        .map(|i| {
            module(
                &format!("m{i}"),
                3,
                0xffff_ffff_9000_0000 + i * 0x1000,
                &mut rng,
            )
        })
        .collect();
    let loaded: Vec<Loaded> = std::iter::once(&k)
        .chain(&mods)
        .zip(1..)
        .map(|(f, id)| Loaded::new(f, id))
        .collect();
    let (mut first, mut second) = (empty(), empty());
    let plain = build(&loaded, None, Some(&mut first));
    assert_eq!(first.files(), MEMO_FILES);
    let bytes = build(&loaded, Some(&first), Some(&mut second));
    assert_eq!(bytes, plain);
    let asked: Vec<usize> = loaded[1..].iter().map(|f| f.asked.get()).collect();
    assert!(asked[..MEMO_FILES].iter().all(|&n| n == 0));
    assert_eq!(asked[MEMO_FILES..], [3, 3, 3]);
}

/// Random loads, unloads and reloads: every build with the memo writes the bytes
/// of one without; a module loaded since the last build is asked for all of its
/// symbols, and one the last build remembered, for none.
#[test]
fn memo_builds_match_plain_builds_across_module_changes() {
    let mut rng = Rng::new(0x5eed);
    let k = kernel(&mut rng);
    let store: Vec<SimFile> = (0..12u64)
        .map(|i| {
            let n = 1 + rng.below(120) as usize;
            if i % 4 == 3 {
                // Answers of no delta: remembered only while the memo has room.
                SimFile::synthetic(&format!("t{i}"), false, n.min(40), 4, 24, &mut rng)
            } else {
                module(
                    &format!("m{i}"),
                    n,
                    0xffff_ffff_a000_0000 + i * 0x10_0000,
                    &mut rng,
                )
            }
        })
        .collect();
    let mut next_id = 2u64;
    let mut set: Vec<(usize, u64)> = Vec::new();
    for i in 0..5 {
        set.push((i, next_id));
        next_id += 1;
    }
    let mut memo = empty();
    let mut remembered: Vec<(usize, u64)> = Vec::new();
    let mut reused = 0;
    for step in 0..60 {
        random_change(&mut rng, &mut set, store.len(), &mut next_id);
        let loaded: Vec<Loaded> = std::iter::once(Loaded::new(&k, 1))
            .chain(set.iter().map(|&(i, id)| Loaded::new(&store[i], id)))
            .collect();
        let mut learnt = empty();
        let bytes = build(&loaded, Some(&memo), Some(&mut learnt));
        for (f, &(i, id)) in loaded[1..].iter().zip(&set) {
            let n = f.file.syms.len();
            if remembered.contains(&(i, id)) {
                assert_eq!(f.asked.get(), 0, "step {step}: {} asked", f.file.name);
                reused += 1;
            } else if i % 4 != 3 {
                assert_eq!(f.asked.get(), n, "step {step}: {} not asked", f.file.name);
            } else {
                assert!(f.asked.get() == n || f.asked.get() == 0, "step {step}");
            }
        }
        assert_eq!(bytes, build(&loaded, None, None), "step {step}");
        check_snapshot(&sim_files(&loaded), &bytes);
        // The delta modules are always remembered (few exceptions, room enough).
        remembered = set.iter().copied().filter(|&(i, _)| i % 4 != 3).collect();
        memo = learnt;
    }
    assert!(reused > 50, "only {reused} modules met again");
}
