//! Our snapshot build against FreeBSD's C driver's algorithm (ksyms_c.c), at two
//! scales, on the same linker tables and the same costed kernel services (lib.rs):
//! ours/C time and the kernel-service calls of one build of each.
//!
//! Run: `cargo bench -p ksyms-vs-c` (or `sh tests/bench.sh`). The service costs
//! are parameters of the model, not measurements: KSYMS_BENCH_CALL_NS (per call,
//! default 50), KSYMS_BENCH_PAGE_NS (per page visited, default 100),
//! KSYMS_BENCH_ALLOC_NS (per page allocated, default 200); KSYMS_BENCH_ROUNDS
//! (default 41) timed rounds of each, interleaved; KSYMS_BENCH_SCALES=1 for the
//! small scale alone.

use ksyms_vs_c::{c, ours, Costs, Counts, Kernel, Rng, SimFile};
use std::time::{Duration, Instant};

struct Scale {
    name: &'static str,
    kernel: usize,
    modules: usize,
    module_symbols: usize,
}

const SCALES: [Scale; 2] = [
    Scale {
        name: "13.2-like small kernel",
        kernel: 21_000,
        modules: 5,
        module_symbols: 200,
    },
    Scale {
        name: "120,000-symbol set",
        kernel: 60_000,
        modules: 40,
        module_symbols: 1_500,
    },
];

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tables(s: &Scale) -> Vec<SimFile> {
    let mut rng = Rng::new(0x006b_7379_6d73);
    let mut files = vec![SimFile::synthetic(
        "kernel", true, s.kernel, 10, 40, &mut rng,
    )];
    for i in 0..s.modules {
        files.push(SimFile::synthetic(
            &format!("mod{i}"),
            false,
            s.module_symbols,
            10,
            40,
            &mut rng,
        ));
    }
    files
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn show(what: &str, c: &Counts) {
    println!(
        "    {what:<5} walks {:>2}  symbol values {:>6}  object writes {:>4}  grab calls {:>4} (pages {:>5})  release calls {:>4}  page visits {:>5}  bytes staged {:>8}  copied {:>8}  zeroed {:>8}",
        c.walks, c.symbol_values, c.object_writes, c.grab_calls, c.page_grabs, c.page_releases, c.page_visits, c.staged, c.copied, c.zeroed
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run once.
    let quick = !std::env::args().any(|a| a == "--bench");
    let costs = Costs {
        call_ns: env("KSYMS_BENCH_CALL_NS", 50.0),
        page_ns: env("KSYMS_BENCH_PAGE_NS", 100.0),
        alloc_ns: env("KSYMS_BENCH_ALLOC_NS", 200.0),
    };
    let rounds = if quick {
        1
    } else {
        env("KSYMS_BENCH_ROUNDS", 41.0) as usize
    };
    println!(
        "snapshot build, ours vs the C driver's algorithm: medians of {rounds} interleaved rounds; service costs {:.0} ns per call, {:.0} ns per page visit, {:.0} ns per page allocated",
        costs.call_ns, costs.page_ns, costs.alloc_ns
    );
    for scale in SCALES.iter().take(env("KSYMS_BENCH_SCALES", 2.0) as usize) {
        let k = Kernel::new(tables(scale), costs);
        // Warm up, and check both build a file of the same size.
        let size = ours(&k).expect("ours");
        let ours_counts = k.take_counts();
        assert_eq!(c(&k).expect("C"), size);
        let c_counts = k.take_counts();
        let (mut t_ours, mut t_c) = (Vec::new(), Vec::new());
        // Alternate which goes first, so that neither always follows the other.
        for round in 0..rounds {
            for turn in 0..2 {
                let t = Instant::now();
                if (round + turn) % 2 == 0 {
                    ours(&k).expect("ours");
                    t_ours.push(t.elapsed());
                } else {
                    c(&k).expect("C");
                    t_c.push(t.elapsed());
                }
            }
        }
        let (o, cc) = (median(t_ours), median(t_c));
        let symbols: usize = scale.kernel + scale.modules * scale.module_symbols;
        let ratio = o.as_secs_f64() / cc.as_secs_f64();
        println!(
            "  {} ({symbols} symbols in {} files, {size} bytes): ours {:.3} ms, C {:.3} ms, ours/C {ratio:.2}x (target <= 0.70x: {})",
            scale.name,
            scale.modules + 1,
            o.as_secs_f64() * 1e3,
            cc.as_secs_f64() * 1e3,
            if ratio <= 0.70 { "met" } else { "not met" }
        );
        show("ours", &ours_counts);
        show("C", &c_counts);
    }
}
