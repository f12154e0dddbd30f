//! The SDT probes of provider `ksyms` (sdt(9)), defined in the shim and fired from
//! here; ksyms(4) lists them. In a kernel without KDTRACE_HOOKS they cost a call
//! to an empty function.

use crate::error::{Error, Result};
use crate::kpi::sys;

/// `ksyms::snapshot:build-start`: attempt `attempt` (from 1) of a snapshot build.
pub fn build_start(attempt: u32) {
    // SAFETY: no preconditions.
    unsafe { sys::kpi_probe_build_start(attempt) };
}

/// `ksyms::snapshot:build-done`: how attempt `attempt` ended: 0 and the snapshot's
/// size in bytes and number of symbols, or the errno and zeros.
pub fn build_done(attempt: u32, result: Result<(u64, u64)>) {
    let (error, size, symbols) = match result {
        Ok((size, symbols)) => (0, size, symbols),
        Err(e) => (e.errno(), 0, 0),
    };
    // SAFETY: no preconditions.
    unsafe { sys::kpi_probe_build_done(attempt, error, size, symbols) };
}

/// `ksyms::snapshot:cache-hit`: an open got the cached snapshot of `size` bytes.
pub fn cache_hit(size: u64) {
    // SAFETY: no preconditions.
    unsafe { sys::kpi_probe_cache_hit(size) };
}

/// `ksyms::open:map`: one try at placing the opener's mapping of `len` bytes at or
/// above `hint`, and its outcome (the address, or the error).
pub fn map(hint: u64, len: u64, result: Result<u64>) {
    let (error, addr) = match result {
        Ok(addr) => (0, addr),
        Err(e) => (e.errno(), 0),
    };
    // SAFETY: no preconditions.
    unsafe { sys::kpi_probe_map(hint, len, error, addr) };
}

/// `ksyms::open:refused`: an open failed with `error`.
pub fn open_refused(error: Error) {
    // SAFETY: no preconditions.
    unsafe { sys::kpi_probe_open_refused(error.errno()) };
}
