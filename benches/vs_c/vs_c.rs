//! Our driver against FreeBSD's C driver's algorithm (ksyms_c.c), at two scales, on
//! the same linker tables and the same costed kernel services (lib.rs): the build
//! alone, and what the hand-over's VMs time, the first open + read all + close
//! after a module change; ours/C and the kernel-service calls of each.
//!
//! Run: `cargo bench -p ksyms-vs-c` (or `sh tests/bench.sh`). The service costs
//! are parameters of the model, not measurements: KSYMS_BENCH_CALL_NS (per call,
//! default 50), KSYMS_BENCH_PAGE_NS (per page visited, default 100),
//! KSYMS_BENCH_ALLOC_NS (per page allocated, default 200), KSYMS_BENCH_FREE_NS
//! (per page freed, default 100); KSYMS_BENCH_ROUNDS (default 41) timed rounds of
//! each, interleaved; KSYMS_BENCH_SCALES=1 for the small scale alone.

use ksyms_vs_c::{
    c, c_first_open, ours, ours_first_open, Costs, Counts, Kernel, Rng, SimFile, Values,
};
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
    for i in 0..=s.modules {
        let mut module = SimFile::synthetic(
            &format!("mod{i}"),
            false,
            s.module_symbols,
            10,
            40,
            &mut rng,
        );
        // As FreeBSD's link_elf reports a module's symbols: its load address plus
        // the table value (link_elf_obj, amd64's: the table value, relocated at
        // load).
        module.values = Values::Linked(0xffff_ffff_8200_0000 + ((i as u64) << 24));
        files.push(module);
    }
    // The last one is the module loaded and unloaded by Kernel::toggle.
    files
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn show(what: &str, c: &Counts) {
    println!(
        "    {what:<5} walks {}, objects made {} (recycled {}), symbol values {}, object writes {}, grab calls {} (pages {}), release calls {}, page visits {}, pages allocated {}, bytes staged {}, copied {}, zeroed {}",
        c.walks, c.objects, c.recycles, c.symbol_values, c.object_writes, c.grab_calls, c.page_grabs, c.page_releases, c.page_visits, c.pages_allocated, c.staged, c.copied, c.zeroed
    );
    if c.reads > 0 {
        println!(
            "          reads {} ({} bytes), mappings made {} and removed {}, pages freed {}",
            c.reads, c.read_bytes, c.maps, c.unmaps, c.pages_freed
        );
    }
}

/// The module changes that come before a first open.
#[derive(Clone, Copy)]
enum Change {
    /// A module unloaded and loaded again (a module in development).
    Reload,
    /// A module loaded (one never loaded before), then unloaded, in turns.
    LoadUnload,
}

impl Change {
    fn apply(self, k: &Kernel, round: usize) {
        match self {
            Change::Reload => k.reload(round),
            Change::LoadUnload => {
                k.toggle();
            }
        }
    }
}

/// Times `ours` and `c` in `rounds` interleaved rounds (alternating which goes
/// first, so that neither always follows the other), each round after a module
/// change (untimed). Medians.
fn race(
    rounds: usize,
    k: &Kernel,
    change: Change,
    ours: impl Fn(&Kernel) -> u64,
    c: impl Fn(&Kernel) -> u64,
) -> (Duration, Duration) {
    let (mut t_ours, mut t_c) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        change.apply(k, round);
        for turn in 0..2 {
            let t = Instant::now();
            if (round + turn) % 2 == 0 {
                ours(k);
                t_ours.push(t.elapsed());
            } else {
                c(k);
                t_c.push(t.elapsed());
            }
        }
    }
    (median(t_ours), median(t_c))
}

fn ratio_line(what: &str, o: Duration, c: Duration, target: f64) {
    let ratio = o.as_secs_f64() / c.as_secs_f64();
    println!(
        "    {what}: ours {:.3} ms, C {:.3} ms, ours/C {ratio:.2}x (target <= {target:.2}x: {})",
        o.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3,
        if ratio <= target { "met" } else { "not met" }
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run once.
    let quick = !std::env::args().any(|a| a == "--bench");
    let costs = Costs {
        call_ns: env("KSYMS_BENCH_CALL_NS", 50.0),
        page_ns: env("KSYMS_BENCH_PAGE_NS", 100.0),
        alloc_ns: env("KSYMS_BENCH_ALLOC_NS", 200.0),
        free_ns: env("KSYMS_BENCH_FREE_NS", 100.0),
    };
    let rounds = if quick {
        1
    } else {
        env("KSYMS_BENCH_ROUNDS", 41.0) as usize
    };
    println!(
        "ours vs the C driver's algorithm: medians of {rounds} interleaved rounds; service costs {:.0} ns per call, {:.0} ns per page visit, {:.0} ns per page allocated, {:.0} ns per page freed",
        costs.call_ns, costs.page_ns, costs.alloc_ns, costs.free_ns
    );
    for scale in SCALES.iter().take(env("KSYMS_BENCH_SCALES", 2.0) as usize) {
        let mut files = tables(scale);
        let extra = files.pop().expect("the extra module");
        let k = Kernel::new(files, extra, costs);
        // Warm up (our first build makes the object the others recycle, learns
        // every module's values and lists what it holds), check both build a
        // file of the same size, and count the calls after each kind of change.
        let size = ours(&k).expect("ours");
        let first_ours = k.take_counts();
        let symbols: usize = scale.kernel + scale.modules * scale.module_symbols;
        println!(
            "  {} ({symbols} symbols in {} files, {size} bytes; the module loaded and unloaded has {}):",
            scale.name,
            scale.modules + 1,
            scale.module_symbols,
        );
        for (change, what, first, second) in [
            (Change::Reload, "a module unloaded and loaded again", "", ""),
            (
                Change::LoadUnload,
                "a kldload or a kldunload, in turns",
                " after the kldload",
                " after the kldunload",
            ),
        ] {
            k.take_counts();
            change.apply(&k, 0);
            let size = ours(&k).expect("ours");
            let build_ours = k.take_counts();
            assert_eq!(c(&k).expect("C"), size);
            let build_c = k.take_counts();
            change.apply(&k, 1);
            let size = ours_first_open(&k).expect("ours");
            let open_ours = k.take_counts();
            assert_eq!(c_first_open(&k).expect("C"), size);
            let open_c = k.take_counts();
            println!("   after {what}:");
            let (o, cc) = race(
                rounds,
                &k,
                change,
                |k| ours_first_open(k).expect("ours"),
                |k| c_first_open(k).expect("C"),
            );
            ratio_line("first open + read all + close", o, cc, 0.70);
            let (o, cc) = race(
                rounds,
                &k,
                change,
                |k| ours(k).expect("ours"),
                |k| c(k).expect("C"),
            );
            ratio_line("build alone", o, cc, 0.70);
            println!("    calls of the build{first}:");
            show("ours", &build_ours);
            show("C", &build_c);
            println!("    calls of the first open + read all + close{second}:");
            show("ours", &open_ours);
            show("C", &open_c);
        }
        println!("   ours' very first build (it makes the object and asks the linker of every module symbol):");
        show("first", &first_ours);
    }
}
