//! The decisions that used to live in the shim, where the tests now reach them: the
//! placement of the opener's mapping on each release's VM (13.x and 14.0 and later
//! read a hint of 0 differently), the device's mode from its tunable, the SDT
//! probes the shim defines and Rust fires (the simulator records each firing), and
//! the checks the page services' wrappers make for what the shim only asserts.

#[path = "sim/mod.rs"]
mod sim;

use ksyms::error::{errno, Error};
use ksyms::placement::{self, PAGE};
use sim::files::compiled;
use sim::*;

/// Opens in `p`, checks that the automatic mapping holds the snapshot, returns
/// (address, mapped length).
fn open_and_check(k: &Kernel, p: Pid, is32: bool) -> (u64, u64) {
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    let a = k
        .ioctl_u64(p, fd, if is32 { KIOCGADDR32 } else { KIOCGADDR })
        .unwrap();
    let m = k.auto_mappings(p);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].addr, a);
    assert_eq!(k.read_mem(p, a, bytes.len()).unwrap(), bytes);
    k.close(p, fd).unwrap();
    assert!(k.auto_mappings(p).is_empty(), "close removed the mapping");
    (a, m[0].len)
}

/// Runs `test` on a fresh kernel of each release, with one process of each width;
/// `case` names the release and the width for messages.
fn on_each_release_and_width(test: impl Fn(&Kernel, Pid, bool, &str)) {
    for release in RELEASES {
        for is32 in [false, true] {
            let k = Kernel::boot_compiled(2);
            k.set_release(release);
            let p = k.spawn(is32);
            test(&k, p, is32, &format!("{release:?} is32 {is32}"));
            k.shutdown();
        }
    }
}

// ---------------------------------------------------------------------------
// Placement: the hints (pure)
// ---------------------------------------------------------------------------

const LEN: u64 = 16 * PAGE;

#[test]
fn hints_are_the_heap_end_then_the_bottom_of_the_map() {
    for is32 in [false, true] {
        let l = VmLayout::default_for(is32);
        let heap_end = (l.data_start + l.data_limit).next_multiple_of(PAGE);
        assert_eq!(
            placement::hints(&l, LEN),
            [Some(heap_end), Some(l.map_min)],
            "is32 {is32}"
        );
    }
}

#[test]
fn no_heap_hint_when_the_data_limit_covers_the_address_space() {
    let mut l = VmLayout::default_for(true);
    // compat.ia32.maxdsiz of 4 GiB: the heap's end is past the 32-bit map.
    l.data_limit = 4 << 30;
    assert_eq!(placement::hints(&l, LEN), [Some(l.map_min), None]);
    // RLIM_INFINITY: the sum fits 64 bits but not the map.
    l.data_limit = i64::MAX as u64;
    assert_eq!(placement::hints(&l, LEN), [Some(l.map_min), None]);
    // A sum that wraps is no hint either (the kernel's own sum would wrap).
    l.data_start = u64::MAX - PAGE;
    l.data_limit = 2 * PAGE;
    assert_eq!(placement::hints(&l, LEN), [Some(l.map_min), None]);
    // Room for the mapping only just below the map's end still counts.
    let mut l = VmLayout::default_for(true);
    l.data_limit = l.map_max - LEN - l.data_start;
    assert_eq!(
        placement::hints(&l, LEN),
        [Some(l.map_max - LEN), Some(l.map_min)]
    );
    l.data_limit += 1;
    assert_eq!(placement::hints(&l, LEN), [Some(l.map_min), None]);
}

#[test]
fn no_hint_is_ever_zero() {
    // security.bsd.map_at_zero=1: vm_map_min is 0, and a hint of 0 would mean the
    // default mmap address on 14.0 and later.
    let mut l = VmLayout::default_for(false);
    l.map_min = 0;
    assert_eq!(placement::hints(&l, LEN)[1], Some(PAGE));
    l.data_start = 0;
    l.data_limit = 0;
    assert_eq!(placement::hints(&l, LEN), [Some(PAGE), None]);
}

#[test]
fn no_hint_when_the_mapping_is_larger_than_the_map() {
    let l = VmLayout::default_for(true);
    assert_eq!(placement::hints(&l, 1 << 32), [None, None]);
    let tries = std::cell::Cell::new(0);
    let r = placement::place(&l, 1 << 32, |_, _| {
        tries.set(tries.get() + 1);
        Ok(0)
    });
    assert_eq!(r, Err(Error::NoMemory));
    assert_eq!(tries.get(), 0);
}

#[test]
fn place_moves_on_only_after_enomem() {
    let l = VmLayout::default_for(false);
    let hints = placement::hints(&l, LEN);
    let mut seen = Vec::new();
    let r = placement::place(&l, LEN - 100, |hint, len| {
        seen.push((hint, len));
        Err(Error::Kernel(errno::ENOMEM))
    });
    assert_eq!(r, Err(Error::NoMemory));
    assert_eq!(
        seen,
        vec![(hints[0].unwrap(), LEN), (hints[1].unwrap(), LEN)],
        "every hint once, in order, with the length in whole pages"
    );
    let mut calls = 0;
    let r = placement::place(&l, LEN, |_, _| {
        calls += 1;
        Err(Error::Kernel(errno::EINVAL))
    });
    assert_eq!(r, Err(Error::Kernel(errno::EINVAL)));
    assert_eq!(calls, 1, "an error other than ENOMEM ends the search");
    assert_eq!(placement::place(&l, 0, |_, _| Ok(1)), Err(Error::Invalid));
    assert_eq!(
        placement::place(&l, u64::MAX, |_, _| Ok(1)),
        Err(Error::Invalid)
    );
}

// ---------------------------------------------------------------------------
// Placement on each release's VM (the simulator's vm_map_find_min)
// ---------------------------------------------------------------------------

#[test]
fn the_model_reproduces_the_14_0_change_of_a_zero_hint() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(true);
    k.set_data_limit(p, 4 << 30);
    let bottom = k.layout(p).map_min;
    k.set_release(Release::R13);
    assert_eq!(k.find_min(p, 0, LEN), Some(bottom), "13.x: from the bottom");
    k.set_release(Release::R14);
    assert_eq!(
        k.find_min(p, 0, LEN),
        None,
        "14.0+: from the default address, past the 32-bit map"
    );
    // With the default limit, 14 starts a zero hint at the heap's end.
    let q = k.spawn(true);
    let d = k.layout(q).default_addr();
    assert_eq!(k.find_min(q, 0, LEN), Some(d));
    k.set_release(Release::R13);
    assert_eq!(k.find_min(q, 0, LEN), Some(bottom));
    k.shutdown();
}

#[test]
fn the_mapping_goes_past_the_largest_heap_on_every_release() {
    on_each_release_and_width(|k, p, is32, case| {
        let d = k.layout(p).default_addr();
        let (a, len) = open_and_check(k, p, is32);
        assert_eq!(a, d, "{case}");
        assert_eq!(k.take_map_tries(), vec![(d, len)], "{case}");
    });
}

#[test]
fn a_32_bit_process_whose_data_limit_covers_its_address_space_opens() {
    for release in RELEASES {
        for limit in [4u64 << 30, i64::MAX as u64] {
            let k = Kernel::boot_compiled(2);
            k.set_release(release);
            let p = k.spawn(true);
            k.set_data_limit(p, limit);
            let l = k.layout(p);
            assert!(l.default_addr() > l.map_max);
            let (a, len) = open_and_check(&k, p, true);
            assert_eq!(a, l.map_min, "{release:?}: first fit from the bottom");
            assert!(a + len <= 1 << 32);
            assert_eq!(
                k.take_map_tries(),
                vec![(l.map_min, len)],
                "{release:?}: the heap hint is skipped"
            );
            // A child forked after the open inherits the mapping (MAP_SHARED).
            let fd = k.open(p, FREAD).unwrap();
            let c = k.fork(p);
            assert!(k.auto_mappings(c).iter().any(|m| m.addr == a));
            k.exit(c);
            k.close(p, fd).unwrap();
            // The limit survives exec(2), and so does the fallback.
            k.exec(p);
            assert_eq!(k.layout(p).data_limit, limit);
            assert_eq!(open_and_check(&k, p, true).0, l.map_min);
            k.shutdown();
        }
    }
}

#[test]
fn no_room_above_the_heap_falls_back_to_the_bottom() {
    on_each_release_and_width(|k, p, is32, case| {
        let l = k.layout(p);
        let d = l.default_addr();
        // Something at the bottom, so that first fit is not simply map_min.
        assert!(k.map_guard(p, l.map_min, 3 * PAGE));
        assert!(k.fill(p, d, l.map_max) >= 1);
        let (a, len) = open_and_check(k, p, is32);
        assert_eq!(a, l.map_min + 3 * PAGE, "{case}");
        assert_eq!(
            k.take_map_tries(),
            vec![(d, len), (l.map_min, len)],
            "{case}"
        );
    });
}

#[test]
fn a_full_address_space_is_enomem_and_leaks_nothing() {
    on_each_release_and_width(|k, p, is32, case| {
        let l = k.layout(p);
        k.fill(p, 0, u64::MAX);
        let guards = k.mappings(p).len();
        k.take_probes();
        assert_eq!(k.open(p, FREAD), Err(ENOMEM), "{case}");
        let tries = k.take_map_tries();
        assert_eq!(tries.len(), 2, "{tries:x?}");
        assert_eq!(tries[1].0, l.map_min);
        // Nothing of the open is left: no open file, no mapping, no reference
        // but the cache's, no memory but what the build keeps for the next.
        let a = k.accounting();
        assert_eq!((a.cdevprivs, a.open_files, a.mallocs), (0, 0, 2), "{a:?}");
        let mut sizes = k.malloc_sizes();
        sizes.sort();
        assert_eq!(
            sizes,
            [
                size_of::<ksyms::kept::Contents>(),
                size_of::<ksyms::values::ValueMemo>()
            ]
        );
        assert_eq!(k.mappings(p).len(), guards);
        let objs = k.device_objects();
        assert_eq!(objs.len(), 1);
        assert_eq!(k.object_refs(objs[0]), 1, "only the cache holds it");
        let probes = k.take_probes();
        let maps: Vec<_> = probes
            .iter()
            .filter_map(|p| match *p {
                Probe::Map { hint, error, .. } => Some((hint, error)),
                _ => None,
            })
            .collect();
        assert_eq!(maps, vec![(tries[0].0, ENOMEM), (tries[1].0, ENOMEM)]);
        assert_eq!(probes.last(), Some(&Probe::OpenRefused { error: ENOMEM }));
        // Room again (one guard gone): the open succeeds.
        let m = k.mappings(p)[0].clone();
        assert!(k.munmap(p, m.addr, m.len));
        open_and_check(k, p, is32);
    });
}

// ---------------------------------------------------------------------------
// The device's mode (the debug.ksyms.mode tunable)
// ---------------------------------------------------------------------------

fn device_mode(found: bool, value: i32) -> (i32, i32) {
    let mut mode = -1;
    // SAFETY: mode is a valid out pointer.
    let r = unsafe { ksyms::ffi::ksyms_rs_device_mode(i32::from(found), value, &mut mode) };
    (r, mode)
}

#[test]
fn device_mode_allows_0400_0440_0444_and_refuses_the_rest() {
    assert_eq!(device_mode(false, 0), (0, 0o400), "no tunable: root only");
    assert_eq!(
        device_mode(false, 0o644),
        (0, 0o400),
        "not found: value unused"
    );
    for m in [0o400, 0o440, 0o444] {
        assert_eq!(device_mode(true, m), (0, m));
    }
    for m in [0, 0o4, 0o404, 0o600, 0o644, 0o666, 0o4444, -1, i32::MAX] {
        assert_eq!(device_mode(true, m), (EINVAL, 0o400), "{m:#o}");
    }
}

// ---------------------------------------------------------------------------
// SDT probes
// ---------------------------------------------------------------------------

#[test]
fn a_build_then_a_cache_hit_then_refusals() {
    let k = Kernel::boot(
        compiled().kernel.clone(),
        vec![compiled().modules[0].clone()],
    );
    let p = k.spawn(false);
    let q = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    let (syms, _) = check::read_symbols(&bytes).unwrap();
    let a = k.ioctl_u64(p, fd, KIOCGADDR).unwrap();
    let d = k.layout(p).default_addr();
    let len = (bytes.len() as u64).next_multiple_of(PAGE);
    assert_eq!(
        k.take_probes(),
        vec![
            Probe::BuildStart { attempt: 1 },
            // A first build: nothing to take from a last one.
            Probe::Reuse {
                files: 0,
                pages: 0,
                modules: 0
            },
            Probe::BuildDone {
                attempt: 1,
                error: 0,
                size: bytes.len() as u64,
                symbols: syms.len() as u64,
            },
            Probe::Map {
                hint: d,
                len,
                error: 0,
                addr: a,
            },
        ]
    );
    let qfd = k.open(q, FREAD).unwrap();
    let qa = k.ioctl_u64(q, qfd, KIOCGADDR).unwrap();
    assert_eq!(
        k.take_probes(),
        vec![
            Probe::CacheHit {
                size: bytes.len() as u64
            },
            Probe::Map {
                hint: d,
                len,
                error: 0,
                addr: qa,
            },
        ]
    );
    assert_eq!(k.open(p, FREAD), Err(EBUSY));
    assert_eq!(k.open(q, FREAD | FWRITE), Err(EPERM));
    assert_eq!(
        k.take_probes(),
        vec![
            Probe::OpenRefused { error: EBUSY },
            Probe::OpenRefused { error: EPERM },
        ]
    );
    k.close(p, fd).unwrap();
    k.close(q, qfd).unwrap();
    assert_eq!(k.take_probes(), vec![], "closes fire nothing");
    k.shutdown();
}

#[test]
fn every_attempt_of_a_changing_build_is_seen() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    k.change_modules_during_three_attempts();
    assert_eq!(k.open(p, FREAD), Err(ENXIO));
    let probes = k.take_probes();
    // Attempts 2 and 3 recycle the object of the attempt before, whose room the
    // small modules loaded meanwhile fit. The size is that attempt's census, which
    // the changes decide: it is only checked to be past the header, and left out
    // of the sequence compared.
    for p in &probes {
        if let Probe::Recycle { size, .. } = *p {
            assert!(size > ksyms::snapshot::HEADER_SIZE, "{p:?}");
        }
    }
    let probes: Vec<Probe> = probes
        .into_iter()
        .map(|p| match p {
            Probe::Recycle { error, .. } => Probe::Recycle { size: 0, error },
            p => p,
        })
        .collect();
    let mut want = Vec::new();
    for attempt in 1..=3 {
        want.push(Probe::BuildStart { attempt });
        if attempt > 1 {
            want.push(Probe::Recycle { size: 0, error: 0 });
        }
        want.push(Probe::BuildDone {
            attempt,
            error: ENXIO,
            size: 0,
            symbols: 0,
        });
    }
    want.push(Probe::OpenRefused { error: ENXIO });
    assert_eq!(probes, want);
    // The next open builds once, successfully.
    let fd = k.open(p, FREAD).unwrap();
    let probes = k.take_probes();
    assert_eq!(probes[0], Probe::BuildStart { attempt: 1 });
    // The failed open left nothing for it: no object to recycle (the failed
    // attempts left it half written), nothing listed, no values learnt.
    assert_eq!(
        probes[1],
        Probe::Reuse {
            files: 0,
            pages: 0,
            modules: 0
        }
    );
    assert!(matches!(
        probes[2],
        Probe::BuildDone {
            attempt: 1,
            error: 0,
            ..
        }
    ));
    k.close(p, fd).unwrap();
    k.shutdown();
}

// ---------------------------------------------------------------------------
// Page services: what the shim asserts, the wrappers check
// ---------------------------------------------------------------------------

/// kpi_object_pages_grab and kpi_object_pages_release assert a count above 0;
/// the wrappers refuse an empty run before the call (the simulator records a
/// call with a count of 0 as a violation, which fails the shutdown).
#[test]
fn the_page_wrappers_never_pass_an_empty_run() {
    use ksyms::kpi::{PageHandle, VmObject};
    use std::ptr::NonNull;

    let k = Kernel::boot(compiled().kernel.clone(), vec![]);
    let obj = VmObject::alloc(4 * PAGE).unwrap();
    assert_eq!(obj.grab_pages(0, &mut []), Err(Error::Invalid));
    // SAFETY: no page to give back.
    unsafe { VmObject::release_pages(&[], true) };
    // A run that is not empty still works, from the first page (nothing held).
    let mut out = [(PageHandle::default(), NonNull::dangling()); 2];
    assert_eq!(obj.grab_pages(0, &mut out), Ok(2));
    // SAFETY: the two pages just grabbed, given back once.
    unsafe { VmObject::release_pages(&[out[0].0, out[1].0], false) };
    drop(obj);
    k.shutdown();
}
