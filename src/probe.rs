//! The SDT probes of provider `ksyms` (sdt(9)), defined in the shim and fired from
//! here through `kpi_probe`; ksyms(4) lists them. In a kernel without KDTRACE_HOOKS
//! they cost a call to a function that returns.

use crate::error::{Error, Result};
use crate::kpi::sys;

/// Fires probe `probe` (a `KPI_PROBE_*`) with `args`, 0 past the probe's own.
fn fire(probe: i32, args: [u64; 4]) {
    let [a0, a1, a2, a3] = args;
    // SAFETY: no preconditions.
    unsafe { sys::kpi_probe(probe, a0, a1, a2, a3) };
}

/// An errno as a probe argument: its 32 bits, from which DTrace reads the probe's
/// `int` argument.
fn errno(e: Error) -> u64 {
    u64::from(e.errno().cast_unsigned())
}

/// `ksyms::snapshot:build-start`: attempt `attempt` (from 1) of a snapshot build.
pub fn build_start(attempt: u32) {
    fire(sys::KPI_PROBE_BUILD_START, [u64::from(attempt), 0, 0, 0]);
}

/// `ksyms::snapshot:build-done`: how attempt `attempt` ended: 0 and the snapshot's
/// size in bytes and number of symbols, or the errno and zeros.
pub fn build_done(attempt: u32, result: Result<(u64, u64)>) {
    let (error, size, symbols) = match result {
        Ok((size, symbols)) => (0, size, symbols),
        Err(e) => (errno(e), 0, 0),
    };
    fire(
        sys::KPI_PROBE_BUILD_DONE,
        [u64::from(attempt), error, size, symbols],
    );
}

/// `ksyms::snapshot:cache-hit`: an open got the cached snapshot of `size` bytes.
pub fn cache_hit(size: u64) {
    fire(sys::KPI_PROBE_CACHE_HIT, [size, 0, 0, 0]);
}

/// `ksyms::snapshot:recycle`: a build's try to recycle the stale snapshot's object
/// for a snapshot of `size` bytes, and its outcome (a new object after an error).
pub fn recycle(size: u64, result: Result<()>) {
    let error = result.err().map_or(0, errno);
    fire(sys::KPI_PROBE_RECYCLE, [size, error, 0, 0]);
}

/// `ksyms::snapshot:reuse`: what a successful build took from the last one: how
/// many of its leading files were the same, how many pages it kept as they were,
/// for how many modules it knew the linker's values.
pub fn reuse(files: u64, pages: u64, modules: u64) {
    fire(sys::KPI_PROBE_REUSE, [files, pages, modules, 0]);
}

/// `ksyms::open:map`: one try at placing the opener's mapping of `len` bytes at or
/// above `hint`, and its outcome (the address, or the error).
pub fn map(hint: u64, len: u64, result: Result<u64>) {
    let (error, addr) = match result {
        Ok(addr) => (0, addr),
        Err(e) => (errno(e), 0),
    };
    fire(sys::KPI_PROBE_MAP, [hint, len, error, addr]);
}

/// `ksyms::open:refused`: an open failed with `error`.
pub fn open_refused(error: Error) {
    fire(sys::KPI_PROBE_OPEN_REFUSED, [errno(error), 0, 0, 0]);
}
