//! A bounded, deterministic fuzzer over the device's entry points (CI-safe: a fixed
//! budget of seeded runs, well under a minute).
//!
//! Two parts:
//! - malformed linker files: names past the string table, unterminated string
//!   tables, negative, truncated and impossible counts (whose byte size overflows),
//!   null and misaligned tables, empty tables, modules vanishing in the middle of a
//!   walk. Every open must give the engine's bytes for the files as reported, or
//!   EFTYPE (or ENXIO for a set that keeps changing), and leak nothing.
//! - call sequences: random opens (read and write), reads at any offset, ioctls,
//!   mmaps with any offset, size and protection, munmaps, closes, forks, descriptor
//!   passing, execs, exits, module loads and unloads (good and bad modules), device
//!   unloads and loads, cache switches and injected failures, each checked against a
//!   model of what SPEC.md says must happen.
//!
//! The seeds of tests/corpus/*.seeds run first, then `KSYMS_FUZZ_RUNS` (default 40)
//! seeds derived from a fixed master seed. A failure names its seed: add it to the
//! corpus once fixed.

#[path = "sim/mod.rs"]
mod sim;

use ksyms::kept::Contents;
use ksyms::values::ValueMemo;
use sim::files::{compiled, Rng, SimFile, Values};
use sim::*;

/// What a build allocates for the next: the modules' values it learns, the list
/// of what its snapshot holds.
const FOR_THE_NEXT: [usize; 2] = [size_of::<ValueMemo>(), size_of::<Contents>()];
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seeds from a corpus file: one per line, `#` comments.
fn corpus(name: &str) -> Vec<u64> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("corpus {}: {e}", path.display()));
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            if let Some(hex) = l.strip_prefix("0x") {
                u64::from_str_radix(hex, 16)
            } else {
                l.parse()
            }
            .unwrap_or_else(|e| panic!("corpus {name}: bad seed {l:?}: {e}"))
        })
        .collect()
}

fn runs() -> u64 {
    std::env::var("KSYMS_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// The corpus seeds, then `runs()` derived ones.
fn seeds(corpus_file: &str, master: u64) -> Vec<u64> {
    let mut out = corpus(corpus_file);
    assert!(!out.is_empty(), "empty corpus {corpus_file}");
    let mut rng = Rng::new(master);
    out.extend((0..runs()).map(|_| rng.next()));
    out
}

// ---------------------------------------------------------------------------
// Linker files, good and bad
// ---------------------------------------------------------------------------

fn good_module(rng: &mut Rng, n: usize) -> SimFile {
    if rng.chance(4) {
        let c = compiled();
        return c.modules[rng.below(c.modules.len() as u64) as usize].clone();
    }
    let count = [0usize, 1, 2, 17, 60, 150][rng.below(6) as usize];
    let mut f = SimFile::synthetic(&format!("fz{n}"), false, count, 1, 48, rng);
    if count == 0 && rng.chance(2) {
        f.strs.clear();
    }
    f
}

/// One corruption of a module; what it is, for messages.
fn corrupt(rng: &mut Rng, f: &mut SimFile) -> &'static str {
    let n = f.syms.len();
    let s = f.strs.len();
    match rng.below(13) {
        0 if n > 1 => {
            let i = 1 + rng.below(n as u64 - 1) as usize;
            f.syms[i].st_name = s as u32 + rng.below(100) as u32;
            "st_name past the string table"
        }
        1 if n > 1 => {
            let i = rng.below(n as u64) as usize;
            f.syms[i].st_name = u32::MAX - rng.below(3) as u32;
            "st_name near u32::MAX"
        }
        2 => {
            f.strs.push(b'a' + rng.below(26) as u8);
            "unterminated string table"
        }
        3 => {
            f.lie.symtab_count = Some(-1 - rng.below(1 << 40) as i64);
            "negative symbol count"
        }
        4 => {
            // Counts whose byte size does not fit the address space: the device must
            // refuse them before touching the (small) table.
            f.lie.symtab_count = Some(
                [
                    i64::MAX,
                    i64::MAX / 24 + 1,
                    i64::MAX / 8,
                    (isize::MAX / 24) as i64 + 1,
                ][rng.below(4) as usize],
            );
            "impossible symbol count"
        }
        5 => {
            f.lie.symtab_count = Some(rng.below(n as u64 + 1) as i64);
            "truncated symbol count"
        }
        6 => {
            f.lie.strtab_len = Some(rng.below(s as u64 + 1) as i64);
            "truncated string table"
        }
        7 => {
            f.lie.strtab_len = Some(i64::MIN + rng.below(10) as i64);
            "negative string table size"
        }
        8 => {
            f.lie.symtab_null = true;
            "null symbol table"
        }
        9 => {
            f.lie.strtab_null = true;
            "null string table"
        }
        10 if n > 1 => {
            f.lie.symtab_misaligned = true;
            f.lie.symtab_count = Some(rng.below(n as u64) as i64);
            "misaligned symbol table"
        }
        11 => {
            f.syms.clear();
            f.strs.clear();
            if let Values::Table(t) = &mut f.values {
                t.clear();
            }
            "empty tables"
        }
        _ => {
            f.strs.clear();
            "no string table"
        }
    }
}

/// What an open of `files` must give: the engine's bytes for the files as the
/// device sees them, or EFTYPE. Also checks an independent reading of the tables
/// agrees with the engine's verdict.
fn expected(files: &[Arc<Loaded>]) -> Result<Arc<Vec<u8>>, i32> {
    let mut eff = Vec::new();
    let mut bad = false;
    for f in files {
        match f.file.effective() {
            Some(e) => {
                bad |= !e.well_formed();
                eff.push(e);
            }
            None => return Err(EFTYPE),
        }
    }
    let view: Vec<_> = eff.iter().map(sim::files::EngineFile).collect();
    let engine = ksyms::snapshot::census(&view)
        .and_then(|c| c.layout())
        .and_then(|layout| {
            let mut buf = vec![0u8; layout.size() as usize];
            ksyms::snapshot::write(
                &view,
                layout,
                &ksyms::elf::FREEBSD_AMD64,
                &mut ksyms::snapshot::SliceSink::with_page_size(&mut buf, 32),
            )
            .map(|_| buf)
        });
    match engine {
        Ok(bytes) => {
            assert!(!bad, "the engine accepted a malformed table");
            check::verify(&eff, &bytes);
            Ok(Arc::new(bytes))
        }
        Err(e) => {
            assert_eq!(e.errno(), EFTYPE, "unexpected engine verdict {e:?}");
            Err(EFTYPE)
        }
    }
}

#[test]
fn malformed_linker_files() {
    let start = Instant::now();
    let mut outcomes: BTreeMap<&'static str, (u32, u32)> = BTreeMap::new();
    for seed in seeds("linker_files.seeds", 0x6b73_796d_735f_6c66) {
        let mut rng = Rng::new(seed);
        let kernel = if rng.chance(3) {
            compiled().kernel.clone()
        } else {
            SimFile::synthetic(
                "fzkernel",
                true,
                50 + rng.below(300) as usize,
                1,
                40,
                &mut rng,
            )
        };
        let k = Kernel::boot(kernel, Vec::new());
        let p = k.spawn(rng.chance(4));
        for round in 0..8 {
            let mut m = good_module(&mut rng, round);
            let what = if rng.chance(4) {
                "good"
            } else {
                corrupt(&mut rng, &mut m)
            };
            let id = k.kld_load(m);
            // Sometimes a module vanishes in the middle of one of the walks.
            let vanish = rng.chance(4);
            if vanish {
                let walk = 1 + rng.below(2);
                let step = 1 + rng.below(3);
                k.hook(At::WalkStep(walk, step), |sim| {
                    if let Some(&id) = sim.module_ids().last() {
                        sim.kld_unload(id);
                    }
                });
            }
            let before = k.files();
            let want = expected(&before);
            let got = k.open(p, FREAD);
            let fired = vanish && k.pending_hooks() == 0;
            k.clear_hooks();
            let after = k.files();
            let got = got.map(|fd| {
                let b = k.read_all(p, fd, 1 + rng.below(5000) as usize).unwrap();
                k.close(p, fd).unwrap();
                b
            });
            let ok = |w: &Result<Arc<Vec<u8>>, i32>| match (&got, w) {
                (Ok(g), Ok(w)) => g == w.as_ref(),
                (Err(g), Err(w)) => g == w,
                _ => false,
            };
            let good = if fired {
                ok(&want) || ok(&expected(&after)) || got == Err(ENXIO)
            } else {
                ok(&want)
            };
            assert!(
                good,
                "seed {seed:#x} round {round} ({what}, vanish {fired}): got {:?}, want {:?}",
                got.as_ref().map(|b| b.len()),
                want.as_ref().map(|b| b.len())
            );
            let e = outcomes.entry(what).or_default();
            if got.is_ok() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
            assert_eq!(k.accounting().cdevprivs, 0, "seed {seed:#x}");
            k.assert_clean();
            // Bad modules go again, most of the time.
            if what != "good" && !rng.chance(4) {
                k.kld_unload(id);
            }
        }
        k.shutdown();
    }
    eprintln!("{:?}: outcomes (ok, error) {outcomes:#?}", start.elapsed());
    // The fuzzer must exercise both sides of most corruptions.
    assert!(
        outcomes.len() >= 12,
        "only {} kinds of input",
        outcomes.len()
    );
    assert!(outcomes.values().filter(|(_, e)| *e > 0).count() >= 10);
}

// ---------------------------------------------------------------------------
// Call sequences against a model
// ---------------------------------------------------------------------------

/// An open file as the model sees it.
struct MFile {
    /// The process that made the open, until it exits: one open per process.
    holder: Option<Pid>,
    /// The process that made the open, until it exits or execs: where the automatic
    /// mapping is.
    opener: Option<Pid>,
    bytes: Arc<Vec<u8>>,
    /// KIOCGADDR's answer.
    addr: u64,
    /// The opener unmapped the automatic mapping and mapped its own memory there.
    remapped: bool,
}

#[derive(Default)]
struct MProc {
    is32: bool,
    fds: BTreeMap<Fd, u64>,
    /// mmap(2)s: address → (length, offset, the bytes mapped).
    mmaps: BTreeMap<u64, (u64, u64, Arc<Vec<u8>>)>,
}

struct Model {
    procs: BTreeMap<Pid, MProc>,
    files: HashMap<u64, MFile>,
    next_file: u64,
    loaded: bool,
    ops: BTreeMap<&'static str, u64>,
}

impl Model {
    /// Every descriptor of every process, as (process, descriptor).
    fn descriptors(&self) -> Vec<(Pid, Fd)> {
        self.procs
            .iter()
            .flat_map(|(&p, mp)| mp.fds.keys().map(move |&f| (p, f)))
            .collect()
    }

    fn live_files(&self) -> impl Iterator<Item = u64> + '_ {
        let mut v: Vec<u64> = self
            .procs
            .values()
            .flat_map(|p| p.fds.values().copied())
            .collect();
        v.sort();
        v.dedup();
        v.into_iter()
    }

    fn holds(&self, p: Pid) -> bool {
        self.live_files()
            .any(|f| self.files.get(&f).is_some_and(|m| m.holder == Some(p)))
    }

    /// Forgets files no descriptor refers to; checks the automatic mapping left the
    /// opener.
    fn collect(&mut self, k: &Kernel) {
        let live: Vec<u64> = self.live_files().collect();
        let dead: Vec<u64> = self
            .files
            .keys()
            .copied()
            .filter(|f| !live.contains(f))
            .collect();
        for f in dead {
            let m = self.files.remove(&f).unwrap();
            if let Some(op) = m.opener {
                let there = k.mapping_at(op, m.addr).map(|x| x.origin);
                if m.remapped {
                    assert_eq!(
                        there,
                        Some(Origin::Anon),
                        "the opener's own mapping was removed"
                    );
                } else {
                    assert_eq!(
                        there, None,
                        "the automatic mapping stayed in the opener after the last close"
                    );
                }
            }
        }
    }

    /// `p` exits or execs: its address space goes; at exit, its holds go too.
    fn forget_opener(&mut self, p: Pid, exiting: bool) {
        for f in self.files.values_mut() {
            if f.opener == Some(p) {
                f.opener = None;
            }
            if exiting && f.holder == Some(p) {
                f.holder = None;
            }
        }
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        EPERM => "open EPERM",
        ENXIO => "open ENXIO",
        EBUSY => "open EBUSY",
        EFTYPE => "open EFTYPE",
        _ => "open other errno",
    }
}

fn pick<T: Copy>(rng: &mut Rng, v: &[T]) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[rng.below(v.len() as u64) as usize])
    }
}

fn sequence(seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let kernel = SimFile::synthetic(
        "sqkernel",
        true,
        100 + rng.below(200) as usize,
        1,
        30,
        &mut rng,
    );
    let mods: Vec<SimFile> = (0..rng.below(3))
        .map(|i| good_module(&mut rng, i as usize))
        .collect();
    let k = Kernel::boot(kernel, mods);
    let mut m = Model {
        procs: BTreeMap::new(),
        files: HashMap::new(),
        next_file: 0,
        loaded: true,
        ops: BTreeMap::new(),
    };
    let mut fault_armed = false;
    for step in 0..ops {
        let ctx = format!("seed {seed:#x} step {step}");
        let pids: Vec<Pid> = m.procs.keys().copied().collect();
        let op = rng.below(100);
        let mut hits = [0u64; 16];
        for f in Kind::FAULTABLE {
            hits[f as usize] = k.fault_hits(f);
        }
        let hits_before: u64 = hits.iter().sum();
        let name: &'static str = match op {
            0..=5 => {
                let is32 = rng.chance(3);
                let p = k.spawn(is32);
                m.procs.insert(
                    p,
                    MProc {
                        is32,
                        ..Default::default()
                    },
                );
                "spawn"
            }
            6..=23 => {
                let Some(p) = pick(&mut rng, &pids) else {
                    continue;
                };
                let fflags = [FREAD, FREAD, FREAD, FWRITE, FREAD | FWRITE][rng.below(5) as usize];
                let files = k.files();
                let autos = |k: &Kernel| k.auto_mappings(p).len();
                let autos_before = autos(&k);
                let failed_before = k.failed_mallocs().len();
                let got = k.open(p, fflags);
                if got.is_err() {
                    assert_eq!(
                        autos(&k),
                        autos_before,
                        "{ctx}: a failed open left a mapping"
                    );
                }
                let hit = Kind::FAULTABLE
                    .iter()
                    .copied()
                    .find(|&f| k.fault_hits(f) > hits[f as usize]);
                // A failed malloc of what a build keeps for the next is no
                // failure: the build goes on without it.
                let memo_only = hit == Some(Kind::Malloc)
                    && k.failed_mallocs()[failed_before..]
                        .iter()
                        .all(|size| FOR_THE_NEXT.contains(size));
                if memo_only {
                    *m.ops.entry("open without a memo").or_default() += 1;
                }
                let hit = hit.filter(|_| !memo_only);
                let want: Result<Arc<Vec<u8>>, i32> = if fflags & FWRITE != 0 {
                    Err(EPERM)
                } else if !m.loaded {
                    Err(ENXIO)
                } else if m.holds(p) {
                    Err(EBUSY)
                } else {
                    expected(&files)
                };
                match (got, want) {
                    (got, _) if hit.is_some() => {
                        let kind = hit.unwrap();
                        assert_eq!(
                            got.err(),
                            Some(kind.injected_errno()),
                            "{ctx}: open under an injected {kind:?} failure"
                        );
                        *m.ops.entry("open injected failure").or_default() += 1;
                    }
                    (Ok(fd), Ok(bytes)) => {
                        let addr = k
                            .ioctl_u64(
                                p,
                                fd,
                                if m.procs[&p].is32 {
                                    KIOCGADDR32
                                } else {
                                    KIOCGADDR
                                },
                            )
                            .unwrap();
                        assert_eq!(
                            k.read_mem(p, addr, bytes.len()).as_deref(),
                            Some(&bytes[..]),
                            "{ctx}: the automatic mapping"
                        );
                        if m.procs[&p].is32 {
                            assert!(
                                addr + bytes.len() as u64 <= 1 << 32,
                                "{ctx}: 32-bit mapping"
                            );
                        }
                        let id = m.next_file;
                        m.next_file += 1;
                        m.files.insert(
                            id,
                            MFile {
                                holder: Some(p),
                                opener: Some(p),
                                bytes,
                                addr,
                                remapped: false,
                            },
                        );
                        m.procs.get_mut(&p).unwrap().fds.insert(fd, id);
                    }
                    (Err(e), Err(w)) => {
                        assert_eq!(e, w, "{ctx}: open");
                        *m.ops.entry(errno_name(e)).or_default() += 1;
                    }
                    (got, want) => panic!(
                        "{ctx}: open gave {:?}, the model wants {:?}",
                        got,
                        want.map(|b| b.len())
                    ),
                }
                "open"
            }
            24..=37 => {
                let fds = m.descriptors();
                let Some((p, fd)) = pick(&mut rng, &fds) else {
                    continue;
                };
                let bytes = m.files[&m.procs[&p].fds[&fd]].bytes.clone();
                let n = bytes.len() as i64;
                let off = match rng.below(6) {
                    0 => -1 - rng.below(1 << 20) as i64,
                    1 => n + rng.below(100) as i64,
                    2 => i64::MAX - rng.below(5) as i64,
                    _ => rng.below(n as u64 + 1) as i64,
                };
                let len = rng.below(3000) as usize;
                let got = k.read(p, fd, off, len);
                let hit = k.fault_hits(Kind::ObjectRead) > hits[Kind::ObjectRead as usize];
                if hit {
                    assert_eq!(got, Err(EFAULT), "{ctx}: injected read failure");
                } else if off < 0 {
                    assert_eq!(got, Err(EINVAL), "{ctx}: negative offset");
                } else {
                    let from = (off as u64).min(n as u64) as usize;
                    let to = (from + len).min(bytes.len());
                    assert_eq!(got.as_deref(), Ok(&bytes[from..to]), "{ctx}: read at {off}");
                }
                "read"
            }
            38..=45 => {
                let fds = m.descriptors();
                let Some((p, fd)) = pick(&mut rng, &fds) else {
                    continue;
                };
                let f = &m.files[&m.procs[&p].fds[&fd]];
                // Any command but FIONBIO and FIOASYNC, which the device accepts
                // and ignores (tests/device.rs).
                let any = std::iter::repeat_with(|| rng.next() & 0xffff_ffff)
                    .find(|&c| c != FIONBIO && c != FIOASYNC)
                    .unwrap_or(0);
                let cmd = [
                    KIOCGSIZE,
                    KIOCGADDR,
                    KIOCGSIZE32,
                    KIOCGADDR32,
                    any,
                    0x4008_6c00 | rng.below(256),
                ][rng.below(6) as usize];
                let got = k.ioctl_u64(p, fd, cmd);
                let want = match cmd {
                    KIOCGSIZE | KIOCGSIZE32 => Ok(f.bytes.len() as u64),
                    KIOCGADDR => Ok(f.addr),
                    KIOCGADDR32 if f.addr < 1 << 32 => Ok(f.addr),
                    KIOCGADDR32 => Err(EOVERFLOW),
                    _ => Err(ENOTTY),
                };
                assert_eq!(got, want, "{ctx}: ioctl {cmd:#x}");
                "ioctl"
            }
            46..=55 => {
                let fds = m.descriptors();
                let Some((p, fd)) = pick(&mut rng, &fds) else {
                    continue;
                };
                let bytes = m.files[&m.procs[&p].fds[&fd]].bytes.clone();
                let rounded = (bytes.len() as u64).div_ceil(PAGE) * PAGE;
                let off = match rng.below(4) {
                    0 => rounded + rng.below(3) * PAGE,
                    1 => rng.next(),
                    _ => rng.below(rounded.max(1)),
                };
                let len = match rng.below(4) {
                    0 => 0,
                    1 => rng.next(),
                    _ => 1 + rng.below(rounded + PAGE),
                };
                let prot = [
                    PROT_READ,
                    PROT_READ,
                    0,
                    PROT_WRITE,
                    PROT_EXEC,
                    PROT_READ | PROT_WRITE,
                ][rng.below(6) as usize];
                let got = k.mmap(p, fd, off, len, prot);
                let foff = off & !(PAGE - 1);
                let size = len.checked_add(off & (PAGE - 1)).and_then(round_page);
                let fits = len > 0
                    && size.is_some_and(|s| {
                        foff < rounded && foff.checked_add(s).is_some_and(|e| e <= rounded)
                    });
                let want_ok = prot & (PROT_WRITE | PROT_EXEC) == 0 && fits;
                match got {
                    Ok(a) => {
                        assert!(want_ok, "{ctx}: mmap({off:#x}, {len:#x}, {prot}) accepted");
                        let size = size.unwrap();
                        let mut want = vec![0u8; size as usize];
                        let end = ((foff + size) as usize).min(bytes.len());
                        if (foff as usize) < end {
                            want[..end - foff as usize].copy_from_slice(&bytes[foff as usize..end]);
                        }
                        let base = a - (off & (PAGE - 1));
                        assert_eq!(
                            k.read_mem(p, base, size as usize),
                            Some(want),
                            "{ctx}: mmap contents"
                        );
                        m.procs
                            .get_mut(&p)
                            .unwrap()
                            .mmaps
                            .insert(base, (size, foff, bytes));
                    }
                    Err(e) => {
                        // The simulator's address space may be full for a 32-bit
                        // process asked for a huge length: ENOMEM from the VM.
                        assert!(
                            (!want_ok && e == EINVAL) || (want_ok && e == ENOMEM),
                            "{ctx}: mmap({off:#x}, {len:#x}, {prot}) gave {e}, want ok {want_ok}"
                        );
                    }
                }
                "mmap"
            }
            56..=61 => {
                let maps: Vec<(Pid, u64)> = m
                    .procs
                    .iter()
                    .flat_map(|(&p, mp)| mp.mmaps.keys().map(move |&a| (p, a)))
                    .collect();
                let Some((p, a)) = pick(&mut rng, &maps) else {
                    continue;
                };
                let (len, off, bytes) = m.procs.get_mut(&p).unwrap().mmaps.remove(&a).unwrap();
                let end = ((off + len) as usize).min(bytes.len());
                let visible = end.saturating_sub(off as usize);
                assert_eq!(
                    k.read_mem(p, a, visible).as_deref(),
                    Some(&bytes[off as usize..off as usize + visible]),
                    "{ctx}: a mapping changed"
                );
                assert!(k.munmap(p, a, len), "{ctx}: munmap");
                "munmap"
            }
            62..=72 => {
                let fds = m.descriptors();
                let Some((p, fd)) = pick(&mut rng, &fds) else {
                    continue;
                };
                k.close(p, fd).unwrap();
                m.procs.get_mut(&p).unwrap().fds.remove(&fd);
                m.collect(&k);
                "close"
            }
            73..=76 => {
                let Some(p) = pick(&mut rng, &pids) else {
                    continue;
                };
                let c = k.fork(p);
                let mp = &m.procs[&p];
                let child = MProc {
                    is32: mp.is32,
                    fds: mp.fds.clone(),
                    mmaps: mp.mmaps.clone(),
                };
                m.procs.insert(c, child);
                "fork"
            }
            77..=79 => {
                let fds = m.descriptors();
                let (Some((p, fd)), Some(q)) = (pick(&mut rng, &fds), pick(&mut rng, &pids)) else {
                    continue;
                };
                let nfd = k.send_fd(p, fd, q);
                let id = m.procs[&p].fds[&fd];
                m.procs.get_mut(&q).unwrap().fds.insert(nfd, id);
                "send"
            }
            80..=82 => {
                let Some(p) = pick(&mut rng, &pids) else {
                    continue;
                };
                k.exec(p);
                m.forget_opener(p, false);
                m.procs.get_mut(&p).unwrap().mmaps.clear();
                "exec"
            }
            83..=85 => {
                let Some(p) = pick(&mut rng, &pids) else {
                    continue;
                };
                k.exit(p);
                m.forget_opener(p, true);
                m.procs.remove(&p);
                m.collect(&k);
                "exit"
            }
            86..=89 => {
                let mut f = good_module(&mut rng, step);
                if rng.chance(4) {
                    corrupt(&mut rng, &mut f);
                }
                k.kld_load(f);
                assert_eq!(k.cached_bytes(), 0, "{ctx}: a stale snapshot cached");
                "kldload"
            }
            90..=92 => {
                let Some(id) = pick(&mut rng, &k.module_ids()) else {
                    continue;
                };
                assert!(k.kld_unload(id));
                assert_eq!(k.cached_bytes(), 0, "{ctx}: a stale snapshot cached");
                "kldunload"
            }
            93 => {
                if m.loaded {
                    let busy = m.live_files().next().is_some();
                    let r = k.unload_device();
                    assert_eq!(r, if busy { EBUSY } else { 0 }, "{ctx}: unload");
                    if r == 0 {
                        m.loaded = false;
                        assert_eq!((k.cached_bytes(), k.spare_bytes()), (0, 0));
                    }
                } else {
                    assert_eq!(k.load_device(), 0);
                    m.loaded = true;
                }
                "device"
            }
            94 => {
                k.set_cache_enabled(rng.chance(2));
                "cache"
            }
            95..=96 => {
                // The opener replaces the automatic mapping with memory of its own.
                let cands: Vec<u64> = m
                    .live_files()
                    .filter(|f| {
                        let mf = &m.files[f];
                        !mf.remapped
                            && mf.opener.is_some_and(|op| {
                                k.mapping_at(op, mf.addr)
                                    .is_some_and(|x| x.origin == Origin::Auto)
                            })
                    })
                    .collect();
                let Some(f) = pick(&mut rng, &cands) else {
                    continue;
                };
                let mf = m.files.get_mut(&f).unwrap();
                let op = mf.opener.unwrap();
                let len = k.mapping_at(op, mf.addr).unwrap().len;
                assert!(k.munmap(op, mf.addr, len));
                assert!(k.map_anon(op, mf.addr, len, 0x5a));
                mf.remapped = true;
                "remap"
            }
            _ => {
                if fault_armed {
                    k.clear_faults();
                    fault_armed = false;
                } else {
                    let kind = pick(&mut rng, &Kind::FAULTABLE).unwrap();
                    k.fail(kind, 1 + rng.below(4));
                    fault_armed = true;
                }
                "fault"
            }
        };
        *m.ops.entry(name).or_default() += 1;
        // A fault that hit is spent; re-arm later.
        if Kind::FAULTABLE
            .iter()
            .map(|&f| k.fault_hits(f))
            .sum::<u64>()
            > hits_before
        {
            fault_armed = false;
        }
        let v = k.take_violations();
        assert!(v.is_empty(), "{ctx} ({name}): {v:#?}");
    }
    k.clear_faults();
    // Every mmap still holds its bytes, whatever was closed or unloaded meanwhile.
    for (&p, mp) in &m.procs {
        for (&a, (len, off, bytes)) in &mp.mmaps {
            let end = ((off + len) as usize).min(bytes.len());
            let visible = end.saturating_sub(*off as usize);
            assert_eq!(
                k.read_mem(p, a, visible).as_deref(),
                Some(&bytes[*off as usize..*off as usize + visible]),
                "seed {seed:#x}: a mapping changed"
            );
        }
    }
    // Rebuilds over a stale snapshot's pages, and those refused (still in use);
    // rebuilds that kept some of them, or knew some modules' values.
    for probe in k.take_probes() {
        let what = match probe {
            Probe::Recycle { error: 0, .. } => "recycle",
            Probe::Recycle { .. } => "recycle refused",
            Probe::Reuse { pages, .. } if pages > 0 => "pages kept",
            Probe::Reuse { modules, .. } if modules > 0 => "values known",
            _ => continue,
        };
        *m.ops.entry(what).or_default() += 1;
    }
    SEQ_OPS.with(|o| {
        let mut o = o.borrow_mut();
        for (k, v) in &m.ops {
            *o.entry(k).or_default() += v;
        }
    });
    k.shutdown();
}

thread_local! {
    static SEQ_OPS: std::cell::RefCell<BTreeMap<&'static str, u64>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

#[test]
fn call_sequences_against_the_model() {
    let start = Instant::now();
    for seed in seeds("sequences.seeds", 0x6b73_796d_735f_7371) {
        sequence(seed, 600);
    }
    let ops = SEQ_OPS.with(|o| o.borrow().clone());
    eprintln!("{:?}: operations {ops:?}", start.elapsed());
    for op in [
        "spawn",
        "open",
        "read",
        "ioctl",
        "mmap",
        "munmap",
        "close",
        "fork",
        "send",
        "exec",
        "exit",
        "kldload",
        "kldunload",
        "device",
        "cache",
        "remap",
        "fault",
        "open EPERM",
        "open ENXIO",
        "open EBUSY",
        "open EFTYPE",
        "recycle",
        "recycle refused",
        "pages kept",
    ] {
        assert!(
            ops.get(op).is_some_and(|&n| n > 0),
            "{op} never happened: {ops:?}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(120));
}
