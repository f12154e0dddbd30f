//! Threads as processes opening, reading, mapping and closing /dev/ksyms while other
//! threads load and unload modules and try to unload the device: bounded in
//! iterations and time, every snapshot read must be exactly the snapshot of one
//! module set that existed, nothing deadlocks (watchdog), nothing leaks.

#[path = "sim/mod.rs"]
mod sim;

use sim::files::{compiled, Rng, SimFile};
use sim::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const READERS: usize = 4;
const ITERATIONS: usize = 120;
/// At most this many module loads and unloads (the changer stops with the readers).
const CHANGES: usize = 3000;
const BUDGET: Duration = Duration::from_secs(20);

/// The modules the changer thread loads and unloads.
fn pool() -> Vec<SimFile> {
    let c = compiled();
    let mut v: Vec<SimFile> = c.modules[2..].to_vec();
    v.push(c.shared_module.clone());
    v.push(SimFile::synthetic(
        "pool_a",
        false,
        200,
        10,
        40,
        &mut Rng::new(5),
    ));
    v.push(SimFile::synthetic(
        "pool_b",
        false,
        1,
        10,
        40,
        &mut Rng::new(6),
    ));
    v
}

/// Every module set that existed, by the serials of its files, and each set's files.
#[derive(Default)]
struct History {
    sets: Vec<Vec<Arc<Loaded>>>,
}

impl History {
    fn record(&mut self, files: Vec<Arc<Loaded>>) {
        self.sets.push(files);
    }
}

#[derive(Default)]
struct Stats {
    opens: AtomicU64,
    enxio: AtomicU64,
    mmaps: AtomicU64,
    forks: AtomicU64,
    loads: AtomicU64,
    unloads: AtomicU64,
    device_unloads: AtomicU64,
}

/// One process's life, repeated: open, read, check size and the automatic mapping,
/// sometimes mmap, sometimes fork a reader, close. Returns the distinct snapshots.
fn reader(k: Sim, seed: u64, stop: &AtomicBool, stats: &Stats) -> HashSet<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut p = k.spawn(rng.chance(3));
    for i in 0..ITERATIONS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let fd = match k.open(p, FREAD) {
            Ok(fd) => fd,
            // The module set kept changing (three attempts), or the device was
            // unloaded for a moment.
            Err(ENXIO) => {
                stats.enxio.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => panic!("reader {seed}: open failed with errno {e}"),
        };
        stats.opens.fetch_add(1, Ordering::Relaxed);
        let chunk = [1usize << 16, 4096, 777, 1 << 20][rng.below(4) as usize];
        let bytes = k.read_all(p, fd, chunk).expect("read");
        assert_eq!(k.ioctl_u64(p, fd, KIOCGSIZE).unwrap(), bytes.len() as u64);
        let a = k.ioctl_u64(p, fd, KIOCGADDR).unwrap();
        assert_eq!(
            k.read_mem(p, a, bytes.len()).as_deref(),
            Some(&bytes[..]),
            "the automatic mapping does not hold what read returns"
        );
        if rng.chance(3) {
            let m = k.mmap(p, fd, 0, bytes.len() as u64, PROT_READ).unwrap();
            assert_eq!(k.read_mem(p, m, bytes.len()).as_deref(), Some(&bytes[..]));
            stats.mmaps.fetch_add(1, Ordering::Relaxed);
            if rng.chance(2) {
                assert!(k.munmap(p, m, bytes.len() as u64));
            }
        }
        if rng.chance(4) {
            let c = k.fork(p);
            assert_eq!(k.read_all(c, fd, 4096).unwrap(), bytes);
            stats.forks.fetch_add(1, Ordering::Relaxed);
            if rng.chance(2) {
                // The child outlives the parent's close.
                k.close(p, fd).unwrap();
                assert_eq!(k.read(c, fd, 0, 64).unwrap(), bytes[..64.min(bytes.len())]);
                k.exit(c);
            } else {
                k.exit(c);
                k.close(p, fd).unwrap();
            }
        } else {
            k.close(p, fd).unwrap();
        }
        seen.insert(bytes);
        // Now and then a new process image or a new process.
        match i % 17 {
            5 => k.exec(p),
            11 => {
                k.exit(p);
                p = k.spawn(rng.chance(3));
            }
            _ => {}
        }
    }
    k.exit(p);
    seen
}

fn changer(k: Sim, seed: u64, stop: &AtomicBool, history: &Mutex<History>, stats: &Stats) {
    let mut rng = Rng::new(seed);
    let pool = pool();
    let mut loaded: HashMap<usize, i32> = HashMap::new();
    for _ in 0..CHANGES {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let which = rng.below(pool.len() as u64) as usize;
        // The only thread that changes the set: record each state after the change.
        match loaded.remove(&which) {
            Some(id) => {
                assert!(k.kld_unload(id));
                stats.unloads.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let id = k.kld_load(pool[which].clone());
                loaded.insert(which, id);
                stats.loads.fetch_add(1, Ordering::Relaxed);
            }
        }
        history.lock().unwrap().record(k.files());
        if rng.chance(3) {
            std::thread::yield_now();
        }
    }
}

fn admin(k: Sim, seed: u64, stop: &AtomicBool, stats: &Stats) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(1 + rng.below(5)));
        match k.unload_device() {
            0 => {
                stats.device_unloads.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
                assert_eq!(k.load_device(), 0);
            }
            EBUSY => {}
            e => panic!("unload: errno {e}"),
        }
    }
}

#[test]
fn readers_changers_and_unloads_at_once() {
    let k = Kernel::boot(compiled().kernel.clone(), compiled().modules[..2].to_vec());
    k.set_jitter(true);
    let _dog = watchdog(Duration::from_secs(90), "the concurrency run");
    let history = Mutex::new(History::default());
    history.lock().unwrap().record(k.files());
    let stop = AtomicBool::new(false);
    let stats = Stats::default();
    let start = Instant::now();
    let sim = *k;
    let seen: Vec<HashSet<Vec<u8>>> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|i| {
                let (stop, stats) = (&stop, &stats);
                s.spawn(move || reader(sim, 1000 + i as u64, stop, stats))
            })
            .collect();
        let (stop_r, history_r, stats_r) = (&stop, &history, &stats);
        let ch = s.spawn(move || changer(sim, 77, stop_r, history_r, stats_r));
        let ad = s.spawn(move || admin(sim, 78, stop_r, stats_r));
        let timer = s.spawn(|| {
            while start.elapsed() < BUDGET && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        });
        let out = readers.into_iter().map(|r| r.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        ch.join().unwrap();
        ad.join().unwrap();
        timer.join().unwrap();
        out
    });
    k.set_jitter(false);
    k.assert_clean();

    // Every snapshot read is exactly the snapshot of one set that existed.
    let history = history.into_inner().unwrap();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, set) in history.sets.iter().enumerate() {
        index.entry(check::engine_bytes(set)).or_insert(i);
    }
    let distinct: HashSet<&Vec<u8>> = seen.iter().flatten().collect();
    for bytes in &distinct {
        let i = index.get(*bytes).unwrap_or_else(|| {
            panic!(
                "a snapshot of {} bytes matches no module set that existed",
                bytes.len()
            )
        });
        check::verify(&history.sets[*i], bytes);
    }
    let s = &stats;
    eprintln!(
        "{:?}: {} opens ({} ENXIO), {} mmaps, {} forks, {} loads, {} unloads, {} device unloads, {} sets, {} distinct snapshots",
        start.elapsed(),
        s.opens.load(Ordering::Relaxed),
        s.enxio.load(Ordering::Relaxed),
        s.mmaps.load(Ordering::Relaxed),
        s.forks.load(Ordering::Relaxed),
        s.loads.load(Ordering::Relaxed),
        s.unloads.load(Ordering::Relaxed),
        s.device_unloads.load(Ordering::Relaxed),
        history.sets.len(),
        distinct.len()
    );
    assert!(
        s.opens.load(Ordering::Relaxed) > 50,
        "too few opens to mean anything"
    );
    assert!(
        distinct.len() > 1,
        "the module set never changed under the readers"
    );
    k.shutdown();
}

/// With the module set unchanged, concurrent opens all share the one cached
/// snapshot: no further linker walk, one VM object.
#[test]
fn concurrent_opens_of_an_unchanged_set_share_one_snapshot() {
    let k = Kernel::boot_compiled(3);
    let _dog = watchdog(Duration::from_secs(60), "the shared-open run");
    let p = k.spawn(false);
    let want = k.snapshot(p).unwrap();
    assert_eq!(k.walks(), 2);
    k.set_jitter(true);
    let sim = *k;
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let want = &want;
            s.spawn(move || {
                let p = sim.spawn(t % 2 == 0);
                for _ in 0..40 {
                    let fd = sim.open(p, FREAD).unwrap();
                    assert_eq!(&sim.read_all(p, fd, 8192).unwrap(), want);
                    sim.close(p, fd).unwrap();
                }
                sim.exit(p);
            });
        }
    });
    k.set_jitter(false);
    assert_eq!(k.walks(), 2, "an open rebuilt an unchanged snapshot");
    assert_eq!(k.calls(Kind::ObjectAlloc), 1);
    assert_eq!(k.device_objects().len(), 1);
    k.shutdown();
}

/// Opens racing exits, execs and last closes in other processes: the automatic
/// mapping of an exited or exec'd opener is never touched (the simulator records a
/// violation if it is), and nothing leaks.
#[test]
fn last_closes_racing_exits_and_execs() {
    let k = Kernel::boot_compiled(2);
    let _dog = watchdog(Duration::from_secs(60), "the exit/close run");
    k.set_jitter(true);
    let sim = *k;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut rng = Rng::new(500 + t);
                for _ in 0..60 {
                    let opener = sim.spawn(false);
                    let holder = sim.spawn(false);
                    let fd = sim.open(opener, FREAD).unwrap();
                    let hfd = sim.send_fd(opener, fd, holder);
                    sim.close(opener, fd).unwrap();
                    // The opener goes away while another thread closes the last
                    // descriptor.
                    std::thread::scope(|s2| {
                        s2.spawn(|| {
                            if rng.chance(2) {
                                sim.exec(opener);
                            }
                            sim.exit(opener);
                        });
                        s2.spawn(|| {
                            sim.close(holder, hfd).unwrap();
                            sim.exit(holder);
                        });
                    });
                }
            });
        }
    });
    k.set_jitter(false);
    k.assert_clean();
    k.shutdown();
}
