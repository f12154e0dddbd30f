//! The device: per-open state and what every call does (`SPEC.md`).
//!
//! # State and locking
//! One [`State`] behind ksyms_lock (an sx lock in the shim, the crate's one `Locked`):
//! whether the module is loaded, the opens under way, the list of live opens, the
//! cached snapshot, the spare (the last stale snapshot, kept for its pages), what
//! the last build learnt of modules' values, and the generation of the linker file
//! set. Each open file's link in that list is a `LockedBy`, opened only with the
//! lock's guard. Lock order: the
//! kernel linker's lock, then ksyms_lock, then VM locks. The linker walks that build
//! a snapshot run with ksyms_lock released, because the kld_load/kld_unload events
//! arrive with the linker's lock held and take ksyms_lock.
//!
//! Every path that takes ksyms_lock, what it does there, and why that must be there
//! (`tests/device.rs` checks which kernel services each path calls with it held):
//! - [`load`], [`unload`]: set or test `loaded` against the opens, the opens under
//!   way and [`RETIRING`]: one decision. Unload takes the cache and the spare out;
//!   their objects are released after the lock.
//! - [`open`], first hold: `loaded`, the one-open-per-process check and `opening`
//!   (which keeps unload refused while the open is built without the lock).
//! - [`snapshot`]: the generation and the cache. On a hit, a new reference to the
//!   cached object (vm_object_reference: a counter), taken while the cache's own
//!   reference keeps the object alive, which only the lock guarantees. On a miss,
//!   the spare (and a cache that is not to be used) is taken out, to be recycled
//!   or released after the lock; a new snapshot's cache
//!   reference is taken before the lock, and the snapshot it replaces (or the
//!   reference, if not cached) released after. The memo of modules' values goes
//!   out with the spare and comes back with the new snapshot (or, after a failed
//!   build, as it went, unless another build's is there); the one not kept is
//!   freed after the lock.
//! - [`open`], second hold: `opening`, the authoritative one-open check, publication.
//!   When another thread of the process won, the mapping just made is removed from
//!   the opener here (kpi_unmap_object wants the lock held; see `retire`), and the
//!   entry with its reference released after the lock.
//! - `retire` (the cdevpriv destructor, or open when cdevpriv cannot be set): the
//!   entry leaves the list, and the automatic mapping is removed from the opener.
//!   The unmap must be under the lock: the lock is what keeps the opener from
//!   exiting or exec'ing meanwhile (its events take the lock, and clear
//!   `mapped_in`), so its address space is still the one mapped into. Its cost is
//!   the map entry's removal, plus the page table entries of the pages the opener
//!   touched (the mapping is made without pre-faulting any); the object reference
//!   the map entry gives back is never the last (the open still holds one), so no
//!   object is torn down under the lock. The open's own reference (maybe the last: page frees) and its
//!   memory go after the lock, while [`RETIRING`] keeps unload refused.
//! - [`kld_changed`]: bumps the generation and makes the stale cache the spare;
//!   the spare it replaces is released after the lock.
//! - `forget` (process exit and exec): clears the process from the links.
//! - [`cached_bytes`], [`spare_bytes`]: read the cache's or the spare's size.
//!
//! Nothing allocates, frees, builds, walks the linker files or releases an object
//! reference under ksyms_lock.
//!
//! # Unload while a destructor runs
//! devfs calls the cdevpriv destructor outside anything destroy_dev(9) waits for:
//! destroy_dev waits for the threads inside cdevsw methods (`si_threadcount`) and
//! itself runs the destructors still on the device's cdevpriv list, but
//! devfs_destroy_cdevpriv takes an entry off that list (under `cdevpriv_mtx`) before
//! it calls the destructor, on the closing thread (sys/fs/devfs/devfs_vnops.c,
//! sys/kern/kern_conf.c destroy_devl, the same in 13.2 and 14.2). So once the
//! destructor's entry has left the list, a kldunload can find no open, destroy the
//! device and unload the module while the destructor still runs. `retire` keeps
//! unload refused until its work is done ([`RETIRING`]); its last action lowers that
//! count, after which the closing thread only returns through the module's code:
//! function epilogues that touch no memory of the module (in build/amd64/ksyms_rs.o
//! as `kbuild build` builds it today, `add $8,%rsp; pop %rbx; pop %rbp; ret` after
//! the `lock decl` in `retire`, which ksyms_rs_cdevpriv_dtor tail-calls). If that
//! thread is preempted in those few instructions and a kldunload
//! completes meanwhile, it resumes in freed text and the kernel panics. The kernel
//! offers no way to close this: any count or lock the module adds is released by
//! module code that must still return, and only a tail call into a kernel function
//! with the destructor's own signature could release it (C has no guaranteed tail
//! call, and no such kernel function releases anything an unload could wait on).
//! FreeBSD's own ksyms.c has the same window, wider: its destructor releases the
//! VM object and frees its state after dropping its lock.
//!
//! # Lifetimes
//! A snapshot is a VM object. Each open holds a reference, the automatic mapping in
//! the opener holds one, each mmap(2) holds one, and the cache holds one. The object
//! goes when the last of them does; mappings depend on no code of this module.
//!
//! # Recycling
//! A module change makes the cached snapshot stale. Its object is kept as the
//! spare, and the next build writes over its pages instead of allocating new ones
//! (and the stale object's are not freed): no page allocated, zeroed or freed when
//! the new snapshot is no bigger than the object. [`VmObject::recycle`] takes the
//! spare only when its reference is the object's last, so no open, mapping or read
//! can see a page change; otherwise the spare is released and a new object made.
//! A new object has room beyond its snapshot ([`object_size`]), so that the
//! snapshot after a kldload still fits it; only pages written exist, so the room
//! costs nothing until used. The memory kept is what the cache would keep: one
//! snapshot.
//!
//! # Only what changed
//! Each snapshot comes with the list of what it holds, file by file (see
//! [`crate::kept`]), which goes with it into the cache and the spare. The first
//! attempt of the next build, if it recycles the spare, leaves the spare's pages
//! of the unchanged files as they are, and writes the rest; later attempts write
//! everything (a failed attempt leaves the object half written).
//!
//! A build also asks the kernel linker for the value of every symbol of every
//! module, and learns the answers in a compact form (see [`crate::values`]); the
//! next build takes them from there for the files it meets again, so that the
//! first open after a kldload asks only of the module just loaded. What was learnt
//! stays right while the files stay loaded, whatever else changes: it is kept in
//! [`State`] across module changes. The list and the memo take about 16 and 20
//! KiB; a build that cannot get memory for new ones goes on without.
//!
//! # Where each rule of SPEC.md lives
//! - read-only device, EPERM for write opens: [`open`]
//! - one open per process, EBUSY: `Held::holds`, checked in [`open`] twice
//!   (early, and authoritatively when the open is published); the hold ends at the
//!   last close or at exit ([`proc_exit`]), not at exec ([`proc_exec`])
//! - snapshot from two walks, at most [`ATTEMPTS`], then ENXIO: [`build`]
//! - shared snapshot while the module set is unchanged: [`snapshot`], [`kld_changed`]
//! - read-only mapping in the opener for KIOCGADDR: [`prepare`]
//! - nothing leaked on a failed open; cdevpriv set last: [`open`]
//! - read: EINVAL before 0, EOF at and past the end, any process: [`read`]
//! - ioctls, 64- and 32-bit, FIONBIO and FIOASYNC ignored, ENOTTY: [`ioctl`]
//! - mmap: read-only, exact bounds: [`mmap_single`]
//! - close: mapping removed from the opener only, references dropped: [`cdevpriv_dtor`]
//! - unload refused while open: [`unload`]
//! - the device's permissions (the debug.ksyms.mode tunable): [`device_mode`]

use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::elf;
use crate::error::{Error, Result};
use crate::kept::{Contents, Prefix};
use crate::kpi::{self, Guard, KBox, Locked, LockedBy, PageHandle, Proc, Uio, VmObject};
use crate::placement;
use crate::probe;
use crate::snapshot::{Batched, Census, PageRuns, SnapshotLayout, Writer};
use crate::values::ValueMemo;

/// Open flags and protections as the kernel passes them.
pub const FWRITE: i32 = kpi::sys::KPI_FWRITE;
pub const PROT_WRITE: i32 = kpi::sys::KPI_PROT_WRITE;
pub const PROT_EXEC: i32 = kpi::sys::KPI_PROT_EXEC;

/// `_IOC(inout, group, num, len)` of `sys/ioccom.h`.
const fn ioc(inout: u64, group: u8, num: u8, len: u64) -> u64 {
    const IOCPARM_MASK: u64 = 0x1fff;
    inout | ((len & IOCPARM_MASK) << 16) | ((group as u64) << 8) | num as u64
}

/// `_IOR(group, num, len)`: the driver writes `len` bytes.
const fn ior(group: u8, num: u8, len: u64) -> u64 {
    ioc(0x4000_0000, group, num, len)
}

/// `_IOW(group, num, len)`: the driver is given `len` bytes.
const fn iow(group: u8, num: u8, len: u64) -> u64 {
    ioc(0x8000_0000, group, num, len)
}

/// `KIOCGSIZE`: `_IOR('l', 1, size_t)`, the snapshot's size.
pub const KIOCGSIZE: u64 = ior(b'l', 1, 8);
/// `KIOCGADDR`: `_IOR('l', 2, void *)`, the snapshot's address in the opener.
pub const KIOCGADDR: u64 = ior(b'l', 2, 8);
/// The same two for 32-bit processes, whose `size_t` and pointers are 4 bytes.
pub const KIOCGSIZE32: u64 = ior(b'l', 1, 4);
pub const KIOCGADDR32: u64 = ior(b'l', 2, 4);
/// `FIONBIO` and `FIOASYNC` of `sys/filio.h` (`_IOW('f', 126, int)`, `_IOW('f', 125,
/// int)`, one value for 32- and 64-bit processes): what fcntl(F_SETFL) sends for
/// O_NONBLOCK and O_ASYNC at every call, and what ioctl(2) passes on after setting
/// the file's flag itself.
pub const FIONBIO: u64 = iow(b'f', 126, 4);
pub const FIOASYNC: u64 = iow(b'f', 125, 4);

/// Attempts at a consistent snapshot before open fails with ENXIO.
pub const ATTEMPTS: usize = 3;

/// The running kernel's page size (the architecture table in `elf.rs`).
pub const PAGE_SIZE: u64 = elf::NATIVE.page_size;

/// The snapshot's VM object and size, as one open holds them.
struct Snapshot {
    object: VmObject,
    size: u64,
}

/// What a build learnt of modules' values (see [`crate::values`]); None when it
/// could not get the memory, and its next build asks the linker of every symbol.
type Memo = Option<KBox<ValueMemo>>;

/// What a snapshot holds, file by file, for the next build over its pages (see
/// [`crate::kept`]); None when its build could not get the memory.
type Listing = Option<KBox<Contents>>;

/// The cached snapshot and the generation of the linker file set it was built from.
struct Cached {
    snapshot: Snapshot,
    generation: u64,
    contents: Listing,
}

/// The last stale snapshot, and what it holds.
struct Spare {
    snapshot: Snapshot,
    contents: Listing,
}

/// Everything behind ksyms_lock.
struct State {
    loaded: bool,
    /// Opens past the first check and not yet published or failed.
    opening: u32,
    /// The live opens: those whose cdevpriv destructor has not run.
    opens: Option<NonNull<OpenFile>>,
    cache: Option<Cached>,
    /// The last stale snapshot, whose object the next build may recycle.
    spare: Option<Spare>,
    /// What the last build learnt of modules' values, for the next one.
    memo: Memo,
    /// Bumped at every change of the linker file set.
    generation: u64,
}

// SAFETY: the raw pointers in State point to OpenFiles (Sync), whose links are only
// touched under ksyms_lock; State itself only lives in the Locked static.
unsafe impl Send for State {}

/// Whether an open exists, or an opener may still be having its mapping removed;
/// readable without the lock: the process_exit and process_exec events arrive for
/// every process in the system, and most of the time there is nothing for them to
/// look at. Written under the lock: set when an open is published, cleared only
/// once the list is empty and the last retirement's unmapping is over, so that an
/// event that sees it clear knows nobody is touching its process.
static ANY_OPEN: AtomicBool = AtomicBool::new(false);

/// Retirements past the list, still releasing what their open held: [`unload`]
/// refuses until none is left. Raised under the lock, lowered without it, as the
/// retirement's last action.
static RETIRING: AtomicU32 = AtomicU32::new(0);

// SAFETY: the one Locked of the crate.
static STATE: Locked<State> = unsafe {
    Locked::new(State {
        loaded: false,
        opening: 0,
        opens: None,
        cache: None,
        spare: None,
        memo: None,
        generation: 0,
    })
};

/// ksyms_lock held, with the state behind it.
type Held<'a> = Guard<'a, State>;

/// The per-open state, the open file's cdevpriv.
pub struct OpenFile {
    snapshot: Snapshot,
    /// The automatic mapping in the opener (set once, before publication).
    mapping: Option<u64>,
    /// Guarded by ksyms_lock, with the list of opens in [`State`].
    link: LockedBy<Link>,
}

// SAFETY: the calls on an open file share its OpenFile through the cdevpriv pointer,
// on any threads at once (see with_open). `snapshot` and `mapping` are written only
// before the open is published and then only read (VmObject is Sync); `link` is a
// LockedBy, opened only with ksyms_lock's guard, so one thread at a time touches it,
// and the raw pointers in it are followed only under that lock.
unsafe impl Sync for OpenFile {}

struct Link {
    /// The process that made the open, until it exits: the one-open-per-process rule.
    /// It keeps its descriptor, and so its hold, across an exec.
    holder: Option<Proc>,
    /// The process whose address space has the automatic mapping: the opener, until
    /// it exits or execs (the mapping goes with that address space).
    mapped_in: Option<Proc>,
    next: Option<NonNull<OpenFile>>,
}

impl OpenFile {
    /// Removes the automatic mapping from the opener, if the opener is still there
    /// with the address space it was made in.
    fn unmap_from_opener(&self, st: &mut Held<'_>) {
        if let (Some(opener), Some(addr)) = (self.link.access_mut(st).mapped_in, self.mapping) {
            // SAFETY: we hold ksyms_lock (we have its guard), and `mapped_in` is still
            // set, so neither proc_exit nor proc_exec has run for it: the process has
            // not exited or exec'd, and its exit or exec event waits for the lock.
            unsafe { opener.unmap(addr, self.snapshot.size, &self.snapshot.object) };
        }
    }
}

/// The list of opens, walked with the guard that opens each entry's link.
impl Held<'_> {
    /// Whether `p` holds a live open it made.
    fn holds(&mut self, p: Proc) -> bool {
        let mut cur = self.opens;
        while let Some(entry) = cur {
            // SAFETY: entries in the list are live until removed under the lock.
            let link = unsafe { entry.as_ref() }.link.access_mut(self);
            if link.holder == Some(p) {
                return true;
            }
            cur = link.next;
        }
        false
    }

    fn insert(&mut self, entry: NonNull<OpenFile>) {
        let head = self.opens;
        // SAFETY: entry is live (just made by the caller) and in no list.
        unsafe { entry.as_ref() }.link.access_mut(self).next = head;
        self.opens = Some(entry);
        ANY_OPEN.store(true, Ordering::SeqCst);
    }

    fn remove(&mut self, entry: NonNull<OpenFile>) {
        // SAFETY: entry is live until its owner frees it after this call.
        let next = unsafe { entry.as_ref() }.link.access_mut(self).next.take();
        if self.opens == Some(entry) {
            self.opens = next;
            return;
        }
        let mut cur = self.opens;
        while let Some(e) = cur {
            // SAFETY: list entries are live.
            let link = unsafe { e.as_ref() }.link.access_mut(self);
            if link.next == Some(entry) {
                link.next = next;
                return;
            }
            cur = link.next;
        }
    }

    fn each_open(&mut self, mut f: impl FnMut(&mut Link)) {
        let mut cur = self.opens;
        while let Some(entry) = cur {
            // SAFETY: list entries are live.
            let link = unsafe { entry.as_ref() }.link.access_mut(self);
            f(link);
            cur = link.next;
        }
    }
}

/// MOD_LOAD.
pub fn load() -> Result<()> {
    let mut st = STATE.lock();
    st.loaded = true;
    Ok(())
}

/// MOD_UNLOAD: refused while any open is alive or under way, or a retirement is
/// still releasing what its open held.
pub fn unload() -> Result<()> {
    let kept = {
        let mut st = STATE.lock();
        if st.opening > 0 || st.opens.is_some() || RETIRING.load(Ordering::SeqCst) > 0 {
            return Err(Error::Busy);
        }
        st.loaded = false;
        (st.cache.take(), st.spare.take(), st.memo.take())
    };
    drop(kept);
    Ok(())
}

/// The permissions /dev/ksyms may have (the debug.ksyms.mode tunable): root only
/// (the default: a symbol table of the running kernel is an address map of it),
/// also group wheel, everyone.
pub const DEVICE_MODES: [i32; 3] = [0o400, 0o440, 0o444];
pub const DEFAULT_DEVICE_MODE: i32 = 0o400;

/// The device's permissions from the tunable's value, if it is set: `Ok` with the
/// mode, or `Err` with the default when the value is not one of [`DEVICE_MODES`].
pub fn device_mode(tunable: Option<i32>) -> core::result::Result<i32, i32> {
    match tunable {
        None => Ok(DEFAULT_DEVICE_MODE),
        Some(m) if DEVICE_MODES.contains(&m) => Ok(m),
        Some(_) => Err(DEFAULT_DEVICE_MODE),
    }
}

/// d_open; `use_cache`: whether the snapshot cache is on (debug.ksyms.cache).
pub fn open(fflags: i32, use_cache: bool) -> Result<()> {
    if fflags & FWRITE != 0 {
        return Err(Error::ReadOnly);
    }
    let me = Proc::current()?;
    {
        let mut st = STATE.lock();
        if !st.loaded {
            return Err(Error::Gone);
        }
        if st.holds(me) {
            return Err(Error::Busy);
        }
        st.opening = st.opening.checked_add(1).ok_or(Error::Busy)?;
    }

    let prepared = prepare(me, use_cache);

    let mut st = STATE.lock();
    st.opening = st.opening.saturating_sub(1);
    let entry = prepared?;
    // Another thread of this process may have opened meanwhile.
    if st.holds(me) {
        entry.unmap_from_opener(&mut st);
        drop(st);
        drop(entry);
        return Err(Error::Busy);
    }
    let ptr = KBox::into_raw(entry);
    st.insert(ptr);
    drop(st);

    // Last: once cdevpriv is set, devfs owns the entry and runs the destructor even
    // if d_open then failed, so nothing may fail after it.
    // SAFETY: this is d_open, and ptr is an OpenFile from into_raw that only the
    // destructor frees from now on.
    if let Err(e) = unsafe { kpi::set_cdevpriv(ptr.cast::<c_void>()) } {
        // SAFETY: ptr came from into_raw above, and devfs did not take it.
        unsafe { retire(ptr) };
        return Err(e);
    }
    Ok(())
}

/// Takes a published open out of the list, removes its automatic mapping from the
/// opener if the opener is still there, and frees it with its snapshot reference.
///
/// # Safety
/// `ptr` came from `KBox::into_raw` in [`open`], and nothing uses it afterwards.
unsafe fn retire(ptr: NonNull<OpenFile>) {
    let entry = {
        let mut st = STATE.lock();
        st.remove(ptr);
        // SAFETY: ptr left the list, and the caller hands over its ownership
        // (contract).
        let entry = unsafe { KBox::from_raw(ptr) };
        entry.unmap_from_opener(&mut st);
        ANY_OPEN.store(st.opens.is_some(), Ordering::SeqCst);
        // Counted before the lock goes: unload() sees the open or this count.
        RETIRING.fetch_add(1, Ordering::SeqCst);
        entry
    };
    // The snapshot reference (maybe the object's last: its pages are freed) and the
    // entry's memory go outside the lock, while unload() still refuses.
    drop(entry);
    // Last: from here a kldunload may proceed (see "Unload while a destructor runs" in
    // the module comment).
    RETIRING.fetch_sub(1, Ordering::SeqCst);
}

/// The per-open state of an open in progress: snapshot, then mapping. Nothing is
/// published yet; on error everything made here is undone by drops.
fn prepare(me: Proc, use_cache: bool) -> Result<KBox<OpenFile>> {
    let snapshot = snapshot(use_cache)?;
    let mut entry = KBox::try_new(OpenFile {
        snapshot,
        mapping: None,
        link: LockedBy::new(Link {
            holder: Some(me),
            mapped_in: Some(me),
            next: None,
        }),
    })?;
    entry.mapping = Some(Proc::map_current(
        &entry.snapshot.object,
        entry.snapshot.size,
    )?);
    Ok(entry)
}

/// A snapshot for a new open: the cached one if the linker file set has not changed
/// since it was built, else a new one (cached if the set did not change meanwhile),
/// built over the spare's pages if it can be recycled.
fn snapshot(use_cache: bool) -> Result<Snapshot> {
    let (generation, spare, dropped, memo) = {
        let mut st = STATE.lock();
        let generation = st.generation;
        match &st.cache {
            Some(c) if use_cache && c.generation == generation => {
                let hit = Snapshot {
                    object: c.snapshot.object.reference(),
                    size: c.snapshot.size,
                };
                drop(st);
                probe::cache_hit(hit.size);
                return Ok(hit);
            }
            _ => {
                let unused = st.cache.take().map(|c| (c.snapshot.object, c.contents));
                let memo = st.memo.take();
                match st.spare.take() {
                    Some(s) => (
                        generation,
                        Some((s.snapshot.object, s.contents)),
                        unused,
                        memo,
                    ),
                    None => (generation, unused, None, memo),
                }
            }
        }
    };
    drop(dropped);

    let (built, memo) = build(spare, memo);
    let (built, contents) = match built {
        Ok(built) => built,
        Err(e) => {
            // What the last build learnt is still right: kept for the next one,
            // unless a build that ran meanwhile left its own.
            let unused = {
                let mut st = STATE.lock();
                match &st.memo {
                    None if st.loaded => core::mem::replace(&mut st.memo, memo),
                    _ => memo,
                }
            };
            drop(unused);
            return Err(e);
        }
    };

    // The cache's reference is taken before the lock, and whichever of it and the
    // replaced snapshot is not kept is released after.
    let copy = use_cache.then(|| Snapshot {
        object: built.object.reference(),
        size: built.size,
    });
    let (replaced, unused, memo) = {
        let mut st = STATE.lock();
        // What the build learnt stays right whatever changed since: it is kept
        // for the next build while the module is loaded.
        let memo = if st.loaded {
            core::mem::replace(&mut st.memo, memo)
        } else {
            memo
        };
        let (replaced, unused) = match copy {
            Some(snapshot) if st.loaded && st.generation == generation => (
                st.cache.replace(Cached {
                    snapshot,
                    generation,
                    contents,
                }),
                None,
            ),
            copy => (None, copy),
        };
        (replaced, unused, memo)
    };
    drop((replaced, unused, memo));
    Ok(built)
}

/// Builds a snapshot, retrying while the linker file set changes under the walks,
/// in the pages of `spare` if it can be recycled (and of a failed attempt's object).
/// The first attempt counts each file's locals as ELF orders them (locals first);
/// later ones count every symbol, in case a table breaks that order. Modules' values
/// are taken from what the last build learnt (`memo`) where it met the same files;
/// the snapshot comes with what this build learnt, for the next (the old memo if no
/// memory could be had for a new one, or if the build failed). The first attempt keeps what the spare
/// holds of the files that are the same (see [`crate::kept`]); the snapshot comes
/// with what it holds, for the next build.
fn build(spare: Option<(VmObject, Listing)>, memo: Memo) -> (Result<(Snapshot, Listing)>, Memo) {
    let (mut spare, mut held) = match spare {
        Some((object, contents)) => (Some(object), contents),
        None => (None, None),
    };
    // Without memory for these, the build goes on, asking the linker every time
    // and writing every page.
    let mut learnt = KBox::<ValueMemo>::try_zeroed().ok();
    let mut listing = KBox::<Contents>::try_zeroed().ok();
    for attempt in (1u32..).take(ATTEMPTS) {
        probe::build_start(attempt);
        let built = build_once(
            attempt > 1,
            &mut spare,
            (held.as_deref(), listing.as_deref_mut()),
            (memo.as_deref(), learnt.as_deref_mut()),
        );
        // After an attempt, the spare holds what it wrote, not what `held` lists.
        held = None;
        probe::build_done(
            attempt,
            built
                .as_ref()
                .map(|(s, layout)| (s.size, layout.symbols()))
                .map_err(|e| *e),
        );
        match built {
            Err(Error::Changed) => continue,
            Ok((snapshot, _)) => return (Ok((snapshot, listing)), learnt.or(memo)),
            Err(e) => return (Err(e), memo),
        }
    }
    (Err(Error::Changed), memo)
}

const _: () = assert!(PAGE_SIZE == kpi::sys::KPI_PAGE_SIZE as u64);

/// The pages of a new VM object, for the writer (through [`Batched`]).
struct ObjectPages<'a> {
    object: &'a VmObject,
}

// SAFETY: kpi_object_pages_grab gives pages of KPI_PAGE_SIZE (PAGE_SIZE) bytes,
// busied and wired, at their direct-map addresses, on an object nobody else uses
// until the snapshot is published (after every page is released).
unsafe impl PageRuns for ObjectPages<'_> {
    type Handle = PageHandle;

    fn page_size(&self) -> usize {
        PAGE_SIZE as usize
    }
    fn grab(&mut self, first: u64, out: &mut [(PageHandle, NonNull<u8>)]) -> Result<usize> {
        self.object.grab_pages(first, out)
    }
    unsafe fn release(&mut self, pages: &[PageHandle], complete: bool) {
        // SAFETY: the caller's contract: pages from grab, each given back once.
        unsafe { VmObject::release_pages(pages, complete) };
    }
}

/// The size of a new object for a snapshot of `size` bytes: a quarter more, and at
/// least 64 KiB more, so that the next snapshot can recycle it after a kldload of
/// that much (a module of a thousand symbols or so takes 50 KiB).
pub fn object_size(size: u64) -> u64 {
    let room = (size / 4).max(64 << 10);
    size.saturating_add(room).min(kpi::OBJECT_MAX).max(size)
}

/// One attempt: census walk (`exact`: reading every symbol), object (`spare`
/// recycled, else a new one), writing walk. The snapshot and its layout; after a
/// failure, the object is left in `spare` for the next attempt.
fn build_once(
    exact: bool,
    spare: &mut Option<VmObject>,
    (held, listing): (Option<&Contents>, Option<&mut Contents>),
    (memo, learnt): (Option<&ValueMemo>, Option<&mut ValueMemo>),
) -> Result<(Snapshot, SnapshotLayout)> {
    let mut census = Census::default();
    let mut prefix = Prefix::new(held);
    kpi::foreach_linker_file(|file| {
        prefix.track(file);
        if exact {
            census.add(file)
        } else {
            census.add_ordered(file)
        }
    })?;
    let layout = census.layout()?;
    let size = layout.size();

    let mut object = spare.take();
    let mut same = 0;
    if let Some(old) = &object {
        let tried = old.recycle(size);
        probe::recycle(size, tried);
        if tried.is_err() {
            // Released before a new one is made: its pages go first.
            object = None;
        } else {
            same = prefix.same();
        }
    }
    let object = match object {
        Some(old) => old,
        None => VmObject::alloc(object_size(size))?,
    };
    let kept = (held.filter(|_| same > 0), same, listing);
    match write(&object, layout, kept, (memo, learnt)) {
        Ok(layout) => Ok((Snapshot { object, size }, layout)),
        Err(e) => {
            *spare = Some(object);
            Err(e)
        }
    }
}

/// The writing walk into `object`'s pages: the pages it holds of its first `same`
/// files kept (`held` lists what it holds), what it writes listed in `listing`;
/// modules' values from `memo` where it has them, what is learnt of the others into
/// `learnt`.
fn write(
    object: &VmObject,
    layout: SnapshotLayout,
    (held, same, listing): (Option<&Contents>, usize, Option<&mut Contents>),
    (memo, learnt): (Option<&ValueMemo>, Option<&mut ValueMemo>),
) -> Result<SnapshotLayout> {
    let mut pages = ObjectPages { object };
    let mut sink = Batched::new(&mut pages, layout.size());
    let mut writer = Writer::new(layout, elf::NATIVE, &mut sink)?
        .remember(memo, learnt)
        .keep(held, same, listing);
    kpi::foreach_linker_file(|file| writer.add(file))?;
    let (files, pages, modules) = writer.reused();
    let layout = writer.finish()?;
    // Every page goes back to the object before anyone sees it.
    drop(sink);
    probe::reuse(files, pages, modules);
    Ok(layout)
}

/// Runs `f` on the per-open state of the current call's open file.
fn with_open<R>(f: impl FnOnce(&OpenFile) -> Result<R>) -> Result<R> {
    let ptr = kpi::get_cdevpriv()?.cast::<OpenFile>();
    // SAFETY: our cdevpriv is always an OpenFile published by open(); devfs keeps it
    // alive (the destructor cannot run) while a call on the open file is in progress.
    // Several calls may share it at once, which OpenFile: Sync allows.
    f(unsafe { shared(ptr) })
}

/// A reference to a `T` that other threads may be using at the same time.
///
/// # Safety
/// `ptr` points to a live `T` for `'a`, mutated by nobody except through what its
/// `Sync` implementation allows.
unsafe fn shared<'a, T: Sync>(ptr: NonNull<T>) -> &'a T {
    // SAFETY: live for 'a (contract); shared use across threads is what Sync permits.
    unsafe { ptr.as_ref() }
}

/// d_read: the snapshot's bytes from the file offset, from any process.
pub fn read(uio: &Uio) -> Result<()> {
    with_open(|file| {
        let offset = u64::try_from(uio.offset()).map_err(|_| Error::Invalid)?;
        if offset >= file.snapshot.size {
            return Ok(());
        }
        file.snapshot.object.read(file.snapshot.size, uio)
    })
}

/// d_ioctl. `arg` is the kernel's copy of the argument, `IOCPARM_LEN(cmd)` bytes.
///
/// FIONBIO and FIOASYNC are accepted and ignored: a read never blocks, and the device
/// sends no signals (FIOSETOWN and FIOGETOWN, what F_SETOWN and F_GETOWN send, stay
/// ENOTTY). Without them fcntl(F_SETFL) would fail on the device whatever the flags.
pub fn ioctl(cmd: u64, arg: &mut [u8]) -> Result<()> {
    if cmd == FIONBIO || cmd == FIOASYNC {
        return Ok(());
    }
    with_open(|file| {
        let value = match cmd {
            KIOCGSIZE | KIOCGSIZE32 => file.snapshot.size,
            KIOCGADDR | KIOCGADDR32 => file.mapping.ok_or(Error::Invalid)?,
            _ => return Err(Error::NoSuchIoctl),
        };
        if cmd == KIOCGSIZE32 || cmd == KIOCGADDR32 {
            let value = u32::try_from(value).map_err(|_| Error::Overflow)?;
            put(arg, value.to_ne_bytes())
        } else {
            put(arg, value.to_ne_bytes())
        }
    })
}

/// Writes `bytes` at the start of an ioctl argument; EINVAL if it is shorter.
fn put<const N: usize>(arg: &mut [u8], bytes: [u8; N]) -> Result<()> {
    *arg.first_chunk_mut::<N>().ok_or(Error::Invalid)? = bytes;
    Ok(())
}

/// d_mmap_single: a new reference to the snapshot's object for a read-only mapping
/// of whole pages inside the snapshot.
pub fn mmap_single(offset: u64, size: u64, nprot: i32) -> Result<VmObject> {
    if nprot & (PROT_WRITE | PROT_EXEC) != 0 {
        return Err(Error::Invalid);
    }
    with_open(|file| {
        let limit = placement::round_page(file.snapshot.size).ok_or(Error::Invalid)?;
        let end = offset.checked_add(size).ok_or(Error::Invalid)?;
        if size == 0 || offset >= limit || end > limit {
            return Err(Error::Invalid);
        }
        Ok(file.snapshot.object.reference())
    })
}

/// The cdevpriv destructor: the last reference to an open file is gone.
///
/// # Safety
/// `priv_` is a cdevpriv installed by [`open`], passed once.
pub unsafe fn cdevpriv_dtor(priv_: NonNull<c_void>) {
    // SAFETY: open() gave ownership of the entry to devfs, which gives it back here,
    // once (contract).
    unsafe { retire(priv_.cast::<OpenFile>()) };
}

/// A linker file was loaded or unloaded: the cached snapshot is stale, and becomes
/// the spare (see "Recycling").
pub fn kld_changed() {
    let replaced = {
        let mut st = STATE.lock();
        st.generation = st.generation.wrapping_add(1);
        match st.cache.take() {
            Some(stale) => st.spare.replace(Spare {
                snapshot: stale.snapshot,
                contents: stale.contents,
            }),
            None => None,
        }
    };
    drop(replaced);
}

/// A process exits: its address space, with our mapping, goes away, and so does
/// its hold on the device (the process pointer may be reused after this).
pub fn proc_exit(p: Proc) {
    forget(p, true);
}

/// A process execs: its address space, with our mapping, is replaced; it keeps its
/// descriptors, and an open it made still counts as its own.
pub fn proc_exec(p: Proc) {
    forget(p, false);
}

/// Forgets `p` as the address space of automatic mappings, and, when it exits, as
/// the holder of opens.
///
/// Without any open there is nothing to forget, and no lock is taken: no
/// destructor is unmapping from `p` (ANY_OPEN stays set until that is over), and
/// an open of `p` itself cannot be under way, since the kernel has stopped p's other
/// threads before it signals the exit or exec, and those threads published their
/// opens under the lock, which orders them before this load. Otherwise the lock is
/// taken, which also waits for a destructor unmapping from `p` right now.
fn forget(p: Proc, exiting: bool) {
    if !ANY_OPEN.load(Ordering::SeqCst) {
        return;
    }
    let mut st = STATE.lock();
    st.each_open(|link| {
        if link.mapped_in == Some(p) {
            link.mapped_in = None;
        }
        if exiting && link.holder == Some(p) {
            link.holder = None;
        }
    });
}

/// The bytes the cache pins (for a sysctl).
pub fn cached_bytes() -> u64 {
    let st = STATE.lock();
    st.cache.as_ref().map_or(0, |c| c.snapshot.size)
}

/// The bytes the spare pins (for a sysctl).
pub fn spare_bytes() -> u64 {
    let st = STATE.lock();
    st.spare.as_ref().map_or(0, |s| s.snapshot.size)
}
