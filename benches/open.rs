//! open + read everything + close of /dev/ksyms through the real entry points on the
//! simulated kernel, at kernel scale: a kernel of 60,000 symbols and 40 modules of
//! 1,500, names of 10 to 40 bytes (synthetic in-memory linker files).
//!
//! Two cases in the same run: the first open after the module set changed (a small
//! module loaded, or unloaded, in turns; the snapshot is built: two linker walks,
//! the stale snapshot's object written over, keeping what it can) and repeated
//! opens with the set unchanged (the cached snapshot is shared). Prints both
//! medians and their ratio; the target is repeated <= 5% of first.
//!
//! `cargo bench --bench open` (plain std::time harness; KSYMS_BENCH_ROUNDS to change
//! the number of timed rounds).

#[path = "../tests/sim/mod.rs"]
mod sim;

use sim::files::{Rng, SimFile};
use sim::{Kernel, Pid, Sim, FREAD, KIOCGSIZE};
use std::time::{Duration, Instant};

const KERNEL_SYMBOLS: usize = 60_000;
const MODULES: usize = 40;
const MODULE_SYMBOLS: usize = 1_500;
/// Reads of 1 MiB, as a consumer reading the file in big chunks would do.
const READ_CHUNK: usize = 1 << 20;

/// open, KIOCGSIZE, reads into one buffer to EOF (when `read`), close: the time
/// and the bytes read.
fn cycle(k: &Sim, p: Pid, buf: &mut Vec<u8>, read: bool) -> (Duration, usize) {
    let t = Instant::now();
    let fd = k.open(p, FREAD).expect("open");
    let mut off = 0;
    if read {
        let size = k.ioctl_u64(p, fd, KIOCGSIZE).expect("KIOCGSIZE") as usize;
        buf.resize(size + 1, 0);
        loop {
            let end = (off + READ_CHUNK).min(buf.len());
            let n = k
                .read_into(p, fd, off as i64, &mut buf[off..end])
                .expect("read");
            if n == 0 {
                break;
            }
            off += n;
        }
    }
    k.close(p, fd).expect("close");
    (t.elapsed(), off)
}

/// Medians of (first, repeated) cycles.
fn measure(
    k: &Kernel,
    p: Pid,
    tiny: &SimFile,
    rounds: usize,
    read: bool,
    size: usize,
) -> (Duration, Duration) {
    let mut buf = Vec::new();
    let mut first = Vec::new();
    let mut repeated = Vec::new();
    let tiny_size = tiny.syms.len() * 24 + tiny.strs.len();
    let mut loaded = None;
    for _ in 0..rounds {
        // A module change: the tiny module loaded, or unloaded, in turns. (A module
        // that comes and goes between two opens leaves the set as it was: the
        // build keeps nearly all of the stale snapshot's pages.)
        match loaded.take() {
            Some(id) => assert!(k.kld_unload(id)),
            None => loaded = Some(k.kld_load(tiny.clone())),
        }
        let walks = k.walks();
        let (t, n) = cycle(k, p, &mut buf, read);
        let want = if loaded.is_some() {
            size + tiny_size
        } else {
            size
        };
        assert_eq!(n, if read { want } else { 0 });
        assert_eq!(k.walks(), walks + 2, "the first open did not build");
        first.push(t);
        for _ in 0..3 {
            let walks = k.walks();
            let (t, n) = cycle(k, p, &mut buf, read);
            let want = if loaded.is_some() {
                size + tiny_size
            } else {
                size
            };
            assert_eq!(n, if read { want } else { 0 });
            assert_eq!(k.walks(), walks, "a repeated open rebuilt");
            repeated.push(t);
        }
    }
    if let Some(id) = loaded {
        assert!(k.kld_unload(id));
    }
    (median(first), median(repeated))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("KSYMS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let mut rng = Rng::new(0x006b_7379_6d73);
    let kernel = SimFile::synthetic("kernel", true, KERNEL_SYMBOLS, 10, 40, &mut rng);
    let modules: Vec<SimFile> = (0..MODULES)
        .map(|i| SimFile::synthetic(&format!("mod{i}"), false, MODULE_SYMBOLS, 10, 40, &mut rng))
        .collect();
    let tiny = SimFile::synthetic("tiny", false, 3, 10, 40, &mut rng);
    let k = Kernel::boot(kernel, modules);
    let p = k.spawn(false);
    let mut buf = Vec::new();

    // Warm up both paths once.
    let (_, size) = cycle(&k, p, &mut buf, true);
    cycle(&k, p, &mut buf, true);

    let (f, r) = measure(&k, p, &tiny, rounds, true, size);
    let (fo, ro) = measure(&k, p, &tiny, rounds, false, size);
    k.shutdown();

    let pct = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64() * 100.0;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "/dev/ksyms on the simulated kernel: {} symbols in {} files, snapshot {:.1} MiB, {} rounds (medians)",
        KERNEL_SYMBOLS + MODULES * MODULE_SYMBOLS,
        MODULES + 1,
        size as f64 / (1 << 20) as f64,
        rounds
    );
    println!(
        "  open+read-all+close, first after a change:    {:>8.3} ms",
        ms(f)
    );
    println!(
        "  open+read-all+close, repeated (cache shared): {:>8.3} ms",
        ms(r)
    );
    let ratio = pct(r, f);
    println!(
        "  repeated / first: {ratio:.2}% (target <= 5%: {})",
        if ratio <= 5.0 { "met" } else { "not met" }
    );
    println!("  open+close alone, first:    {:>8.3} ms", ms(fo));
    println!("  open+close alone, repeated: {:>8.3} ms", ms(ro));
    println!(
        "  repeated / first without the read: {:.2}%; reading the {:.1} MiB costs {:.3} ms either way",
        pct(ro, fo),
        size as f64 / (1 << 20) as f64,
        ms(r.saturating_sub(ro))
    );
}
