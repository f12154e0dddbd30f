//! Compiles the benchmark's C baseline (ksyms_c.c), FreeBSD's C driver's snapshot
//! algorithm. It lives in this bench-only crate so that nothing of it reaches the
//! kernel module, and the main crate's build script stays a cheap hash check: the
//! kernel build never compiles C for a benchmark.
fn main() {
    println!("cargo::rerun-if-changed=ksyms_c.c");
    cc::Build::new()
        .file("ksyms_c.c")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .compile("ksyms_c");
}
