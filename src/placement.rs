//! Where the automatic mapping goes in the opener's address space.
//!
//! The shim reports the facts ([`VmLayout`], read with the kernel's accessors) and
//! maps at a hint this module gives; `vm_map_find_min` then takes the first free
//! range at or above the hint (`kpi_map_object` in `kmod/ksyms_kpi.h`). The hints,
//! in order:
//!
//! 1. The end of the largest heap the process may grow, `round_page(vm_daddr +
//!    lim_max(RLIMIT_DATA))`: where mmap(2) starts a file mapping given no address
//!    (`kern_mmap`), so the snapshot lands neither just above page 0 nor inside the
//!    heap's range. Skipped when the mapping cannot fit between it and the map's
//!    end: a 32-bit process whose data limit covers its address space (a large
//!    `compat.ia32.maxdsiz`).
//! 2. The map's lowest user address (`vm_map_min`, at least one page): a first-fit
//!    search of the whole map.
//!
//! No hint is ever 0, because its meaning changed in 14.0: 13.x's
//! `vm_map_find_min` searches from the bottom for a hint of 0, 14.0 and later
//! start at the default mmap address (the end of the heap above) and set
//! `MAP_NO_HINT`, so a retry with 0 would repeat the first attempt. With non-zero
//! hints, both behave the same: search up from the hint, then from the default
//! address if that is lower than the hint.

use crate::error::{errno, Error, Result};
use crate::kpi::sys;

/// `PAGE_SIZE`, as the shim asserts.
pub const PAGE: u64 = {
    assert!(sys::KPI_PAGE_SIZE > 0 && sys::KPI_PAGE_SIZE.count_ones() == 1);
    sys::KPI_PAGE_SIZE as u64
};

/// The facts about the current process's address space that placement needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmLayout {
    /// `vm_map_min`: the lowest user address.
    pub map_min: u64,
    /// `vm_map_max`: the end of the user address space (below 4 GiB for a 32-bit
    /// process).
    pub map_max: u64,
    /// `vm_daddr`: the start of the data segment.
    pub data_start: u64,
    /// `lim_max(td, RLIMIT_DATA)`: how far the heap may grow past `data_start`.
    pub data_limit: u64,
}

/// `round_page`, `None` on overflow.
pub fn round_page(x: u64) -> Option<u64> {
    Some(x.checked_add(PAGE - 1)? & !(PAGE - 1))
}

/// The length of a mapping of `size` bytes: whole pages, never 0.
pub fn map_len(size: u64) -> Result<u64> {
    round_page(size)
        .filter(|&len| len != 0)
        .ok_or(Error::Invalid)
}

/// The hints to try, in order, for a mapping of `len` bytes (a multiple of
/// [`PAGE`]): each non-zero, page-aligned, distinct, and with room for the mapping
/// between it and the map's end. Empty when the mapping cannot fit anywhere.
pub fn hints(layout: &VmLayout, len: u64) -> [Option<u64>; 2] {
    let bottom = round_page(layout.map_min.max(PAGE));
    let fits = |hint: u64| {
        hint.checked_add(len)
            .is_some_and(|end| end <= layout.map_max)
    };
    let bottom = bottom.filter(|&b| fits(b));
    let heap_end = layout
        .data_start
        .checked_add(layout.data_limit)
        .and_then(round_page)
        .filter(|&h| fits(h) && bottom.is_none_or(|b| h > b));
    match heap_end {
        Some(h) => [Some(h), bottom],
        None => [bottom, None],
    }
}

/// Places a mapping of `size` bytes: calls `map_at(hint, len)` for each of
/// [`hints`] in turn until one succeeds, and returns the address it mapped at.
/// ENOMEM (no room at or above that hint) moves on to the next hint; any other
/// error ends the search. [`Error::NoMemory`] when no hint is left.
pub fn place(
    layout: &VmLayout,
    size: u64,
    mut map_at: impl FnMut(u64, u64) -> Result<u64>,
) -> Result<u64> {
    let len = map_len(size)?;
    for hint in hints(layout, len).into_iter().flatten() {
        match map_at(hint, len) {
            Err(e) if e.errno() == errno::ENOMEM => continue,
            other => return other,
        }
    }
    Err(Error::NoMemory)
}
