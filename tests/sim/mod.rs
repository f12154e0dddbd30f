//! The simulated kernel: every `kpi_*` service of `kmod/ksyms_kpi.h`, and the parts of
//! FreeBSD around the device (kernel linker, processes, descriptors, devfs cdevpriv,
//! VM objects and mappings), so that tests drive the real `ksyms_rs_*` entry points
//! as the shim would.
//!
//! One simulated kernel per test binary, as the crate has one global state per
//! binary: [`Kernel::boot`] takes a global test mutex, resets the world, calls
//! `ksyms_rs_load`; [`Kernel::shutdown`] (or drop) exits every process, calls
//! `ksyms_rs_unload`, and fails the test on any leak (kpi_malloc blocks, VM
//! objects, mappings, cdevprivs, held locks) or any contract violation recorded on
//! the way (double free, use of a dead object or process, unbalanced locks, lock
//! order, writes after mapping, ...). A watchdog aborts a test that deadlocks.
//!
//! Include with `#[path = "sim/mod.rs"] mod sim;` (tests) or
//! `#[path = "../tests/sim/mod.rs"] mod sim;` (examples, benches).
#![allow(dead_code)]

pub mod check;
pub mod files;

use files::SimFile;
use ksyms::kpi::sys;
use std::alloc::Layout;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_long, c_ulong, c_void};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Constants (FreeBSD values, spelled out independently of the crate)
// ---------------------------------------------------------------------------

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const ENXIO: i32 = 6;
pub const EBADF: i32 = 9;
pub const ENOMEM: i32 = 12;
pub const EFAULT: i32 = 14;
pub const EBUSY: i32 = 16;
pub const EINVAL: i32 = 22;
pub const ENOTTY: i32 = 25;
pub const EFBIG: i32 = 27;
pub const EFTYPE: i32 = 79;
pub const EOVERFLOW: i32 = 84;

pub const FREAD: i32 = 0x1;
pub const FWRITE: i32 = 0x2;
pub const PROT_READ: i32 = 0x1;
pub const PROT_WRITE: i32 = 0x2;
pub const PROT_EXEC: i32 = 0x4;
pub const PAGE: u64 = 4096;

/// `_IOR('l', 1, size_t)`, `_IOR('l', 2, void *)` on amd64 and for 32-bit processes.
pub const KIOCGSIZE: u64 = 0x4008_6c01;
pub const KIOCGADDR: u64 = 0x4008_6c02;
pub const KIOCGSIZE32: u64 = 0x4004_6c01;
pub const KIOCGADDR32: u64 = 0x4004_6c02;
/// `_IOW('f', 126, int)`, `_IOW('f', 125, int)`, `_IOW('f', 124, int)`,
/// `_IOR('f', 123, int)` (sys/filio.h), the same for 32-bit processes.
pub const FIONBIO: u64 = 0x8004_667e;
pub const FIOASYNC: u64 = 0x8004_667d;
pub const FIOSETOWN: u64 = 0x8004_667c;
pub const FIOGETOWN: u64 = 0x4004_667b;
const IOC_OUT: u64 = 0x4000_0000;
/// O_NONBLOCK and O_ASYNC, which are also the file flags FNONBLOCK and FASYNC.
pub const O_NONBLOCK: i32 = 0x4;
pub const O_ASYNC: i32 = 0x40;

pub fn round_page(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

// ---------------------------------------------------------------------------
// The services the simulator counts, fails and hooks
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Malloc,
    Free,
    ObjectAlloc,
    ObjectRecycle,
    PageGrab,
    PageRelease,
    ObjectRead,
    MapObject,
    UnmapObject,
    SetCdevpriv,
    GetCdevpriv,
    LinkerForeach,
    SymbolValue,
    Lock,
}

const KINDS: usize = 14;

impl Kind {
    fn index(self) -> usize {
        self as usize
    }
    /// The services whose failure the simulator can inject, and which the device
    /// reports (a refused [`Kind::ObjectRecycle`] can be injected too, but is no
    /// failure: the device makes a new object).
    pub const FAULTABLE: [Kind; 6] = [
        Kind::Malloc,
        Kind::ObjectAlloc,
        Kind::PageGrab,
        Kind::ObjectRead,
        Kind::MapObject,
        Kind::SetCdevpriv,
    ];
    /// What an injected failure returns: NULL (ENOMEM to the caller) or this errno.
    pub fn injected_errno(self) -> i32 {
        match self {
            Kind::Malloc | Kind::ObjectAlloc | Kind::MapObject => ENOMEM,
            Kind::ObjectRead => EFAULT,
            // No page from kpi_object_pages_grab: past the object.
            Kind::PageGrab => EINVAL,
            // devfs_set_cdevpriv can only fail with EBUSY; a recycle is refused
            // with it (the object is still used, or too small).
            Kind::SetCdevpriv | Kind::ObjectRecycle => EBUSY,
            _ => EFAULT,
        }
    }
}

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Just before the n-th call (counted from the hook's registration) of a service;
    /// for LinkerForeach, before the linker lock is taken.
    Call(Kind, u64),
    /// After the k-th callback of the n-th linker walk (from registration), with the
    /// walking thread holding the linker lock: a module vanishing mid-walk.
    WalkStep(u64, u64),
    /// After the n-th linker walk (from registration) released the linker lock.
    WalkEnd(u64),
}

type HookFn = Box<dyn FnOnce(Sim) + Send>;

// ---------------------------------------------------------------------------
// Handles: kernel objects cross the boundary as tagged, never reused numbers
// ---------------------------------------------------------------------------

const TAG_PAGE: usize = 0x4000_0000_0000;
const TAG_PROC: usize = 0x5000_0000_0000;
const TAG_OBJ: usize = 0x6000_0000_0000;
const TAG_LF: usize = 0x7000_0000_0000;
const TAG_MASK: usize = 0xf000_0000_0000;

fn encode(tag: usize, n: u64) -> usize {
    tag | ((n as usize) << 8)
}

fn decode(tag: usize, p: usize) -> Option<u64> {
    if p & TAG_MASK != tag || p & 0xff != 0 {
        return None;
    }
    Some(((p & !TAG_MASK) >> 8) as u64)
}

pub type Pid = u64;
pub type Fd = i32;

// ---------------------------------------------------------------------------
// Locks: the kernel linker's kld_sx and ksyms_lock, with owners
// ---------------------------------------------------------------------------

struct SimLock {
    name: &'static str,
    owner: Mutex<Option<ThreadId>>,
    cv: Condvar,
}

impl SimLock {
    const fn new(name: &'static str) -> SimLock {
        SimLock {
            name,
            owner: Mutex::new(None),
            cv: Condvar::new(),
        }
    }
    fn lock(&self) {
        let me = std::thread::current().id();
        let mut g = self.owner.lock().unwrap_or_else(|e| e.into_inner());
        if *g == Some(me) {
            fatal(&format!(
                "recursion on the non-recursive sx lock {}",
                self.name
            ));
        }
        while g.is_some() {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        *g = Some(me);
    }
    fn unlock(&self) -> bool {
        let me = std::thread::current().id();
        let mut g = self.owner.lock().unwrap_or_else(|e| e.into_inner());
        if *g != Some(me) {
            return false;
        }
        *g = None;
        self.cv.notify_all();
        true
    }
    fn held_by_me(&self) -> bool {
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) == Some(std::thread::current().id())
    }
    fn owner(&self) -> Option<ThreadId> {
        *self.owner.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn force_release(&self) {
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.cv.notify_all();
    }
}

static KLD: SimLock = SimLock::new("kld_sx");
static KSYMS: SimLock = SimLock::new("ksyms_lock");

fn fatal(msg: &str) -> ! {
    // Straight to the file descriptor: the test harness's output capture would lose
    // an eprintln! when the process aborts.
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("\nsimulated kernel panic: {msg}\n").as_bytes());
    std::process::abort();
}

// ---------------------------------------------------------------------------
// Address spaces: each release's vm_map_find_min
// ---------------------------------------------------------------------------

/// The FreeBSD release whose VM placement the simulator follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Release {
    /// 13.x: `vm_map_find_min` given a hint of 0 searches from the bottom of the map.
    R13,
    /// 14.0 and later: a hint of 0 means the default mmap address (past the largest
    /// heap) and sets MAP_NO_HINT.
    #[default]
    R14,
}

pub const RELEASES: [Release; 2] = [Release::R13, Release::R14];

/// A process's map bounds and data segment, as `kpi_vm_layout` reports them: the
/// facts the driver's placement reads.
pub use ksyms::placement::VmLayout;

/// amd64 `VM_MAXUSER_ADDRESS` (4-level paging) and a 32-bit process's map end
/// (`FREEBSD32_MAXUSER`).
pub const MAXUSER_64: u64 = 0x0000_7fff_ffff_f000;
pub const MAXUSER_32: u64 = (1 << 32) - PAGE;
/// amd64 `MAXDSIZ` (32 GiB) and `IA32_MAXDSIZ` (512 MiB), the default data limits.
pub const MAXDSIZ_64: u64 = 32 << 30;
pub const MAXDSIZ_32: u64 = 512 << 20;

/// What the model knows of a process's layout besides what the driver reads.
pub trait LayoutModel {
    /// A fresh image: `vm_map_min` one page up (security.bsd.map_at_zero=0), a data
    /// segment where a non-PIE executable has it, the default data limit.
    fn default_for(is32: bool) -> Self;

    /// vm_mmap_object's default address, `round_page(vm_daddr + lim_max(RLIMIT_DATA))`,
    /// computed in `vm_offset_t` as the kernel does (it may lie past the map).
    fn default_addr(&self) -> u64;
}

impl LayoutModel for VmLayout {
    fn default_for(is32: bool) -> VmLayout {
        if is32 {
            VmLayout {
                map_min: PAGE,
                map_max: MAXUSER_32,
                data_start: 0x0804_c000,
                data_limit: MAXDSIZ_32,
            }
        } else {
            VmLayout {
                map_min: PAGE,
                map_max: MAXUSER_64,
                data_start: 0x0021_0000,
                data_limit: MAXDSIZ_64,
            }
        }
    }

    fn default_addr(&self) -> u64 {
        self.data_start
            .wrapping_add(self.data_limit)
            .wrapping_add(PAGE - 1)
            & !(PAGE - 1)
    }
}

/// `vm_map_findspace`: the lowest address at or above `start` (raised to the map's
/// minimum) with `len` free bytes below the map's end.
fn vm_map_findspace(
    layout: &VmLayout,
    maps: &BTreeMap<u64, Mapping>,
    start: u64,
    len: u64,
) -> Option<u64> {
    let mut addr = start.max(layout.map_min);
    // A mapping that starts below addr may still cover it.
    if let Some((_, m)) = maps.range(..addr).next_back() {
        addr = addr.max(m.addr + m.len);
    }
    for m in maps.range(addr..).map(|(_, m)| m) {
        if addr.checked_add(len)? <= m.addr {
            break;
        }
        addr = addr.max(m.addr + m.len);
    }
    (addr.checked_add(len)? <= layout.map_max).then_some(addr)
}

/// `vm_map_find_min(map, ..., &hint, len, default_addr, ...)` as `vm_mmap_object`
/// calls it for the current process's map (no ASLR, no alignment): search up from
/// the hint; on failure, again from the default address if that is below the hint.
/// From 14.0 a hint of 0 is replaced by the default address (with MAP_NO_HINT);
/// 13.x searches from the bottom for it.
pub fn vm_map_find_min(
    release: Release,
    layout: &VmLayout,
    maps: &BTreeMap<u64, Mapping>,
    hint: u64,
    len: u64,
) -> Option<u64> {
    let default = layout.default_addr();
    let mut hint = hint;
    if release == Release::R14 && hint == 0 {
        hint = default;
    }
    loop {
        if let Some(addr) = vm_map_findspace(layout, maps, hint, len) {
            return Some(addr);
        }
        if default >= hint {
            return None;
        }
        hint = default;
    }
}

/// One firing of an SDT probe of provider ksyms, with its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    BuildStart {
        attempt: u32,
    },
    BuildDone {
        attempt: u32,
        error: i32,
        size: u64,
        symbols: u64,
    },
    CacheHit {
        size: u64,
    },
    Map {
        hint: u64,
        len: u64,
        error: i32,
        addr: u64,
    },
    OpenRefused {
        error: i32,
    },
    Recycle {
        size: u64,
        error: i32,
    },
    Reuse {
        files: u32,
        pages: u64,
        modules: u32,
    },
}

// ---------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Made by kpi_map_object (the device's automatic mapping).
    Auto,
    /// Made by mmap(2) through d_mmap_single.
    Mmap,
    /// Anonymous memory mapped by the process itself.
    Anon,
}

#[derive(Clone, Debug)]
pub struct Mapping {
    pub addr: u64,
    pub len: u64,
    pub obj: u64,
    pub offset: u64,
    pub origin: Origin,
}

#[derive(Debug, PartialEq, Eq)]
enum PState {
    Alive,
    Exiting,
    Dead,
}

struct Proc {
    is32: bool,
    state: PState,
    fds: BTreeMap<Fd, u64>,
    next_fd: Fd,
    /// The current address space's generation and its mappings by address.
    vm_gen: u64,
    maps: BTreeMap<u64, Mapping>,
    /// The bounds of the map and the data segment of the current image.
    layout: VmLayout,
    /// The generation of the address space process_exit/process_exec was signalled for.
    gone_gen: Option<u64>,
}

impl Proc {
    /// A new process: alive, no descriptors; its address space comes from new_vm.
    fn fresh(is32: bool) -> Proc {
        Proc {
            is32,
            state: PState::Alive,
            fds: BTreeMap::new(),
            next_fd: 3,
            vm_gen: 0,
            maps: BTreeMap::new(),
            layout: VmLayout::default_for(is32),
            gone_gen: None,
        }
    }
}

struct FileObj {
    refs: u32,
    cdevpriv: Option<usize>,
    /// f_flag: the open's flags, and FNONBLOCK/FASYNC as fcntl(2) and ioctl(2) set them.
    flags: i32,
}

struct Obj {
    refs: u64,
    data: Vec<u8>,
    /// Per page: written through kpi_object_pages_release since the object was
    /// made or recycled (a page never written reads as zeros, as a fresh anonymous
    /// page does; a recycled one keeps its old bytes).
    valid: Vec<bool>,
    /// Recycled by kpi_object_recycle, and how many times.
    recycled: u64,
    /// Pages grabbed and not released yet.
    busy: usize,
    mapped: bool,
    anon: bool,
}

/// A loaded linker file.
pub struct Loaded {
    /// Its id, handed out as FreeBSD's LINKER_GET_NEXT_FILE_ID does: the id of
    /// the file loaded last goes to the next one once that file is gone.
    pub id: i32,
    /// Never reused: its lf->loadcnt.
    pub serial: u64,
    /// Its struct linker_file (the callbacks' lf): new at every load but for
    /// [`Kernel::kld_replace`], which models malloc handing the same block back.
    pub slot: u64,
    pub file: SimFile,
}

impl files::AsFile for Loaded {
    fn file(&self) -> &SimFile {
        &self.file
    }
}

#[derive(Default)]
struct World {
    booted: bool,
    cache_enabled: bool,
    device_loaded: bool,
    files: Vec<Arc<Loaded>>,
    next_lf_id: i32,
    next_serial: u64,
    procs: BTreeMap<Pid, Proc>,
    next_pid: Pid,
    fps: BTreeMap<u64, FileObj>,
    next_fp: u64,
    objects: BTreeMap<u64, Obj>,
    dead_objects: u64,
    /// Pages grabbed by kpi_object_pages_grab and not released yet.
    pages: BTreeMap<u64, SimPage>,
    next_page: u64,
    next_obj: u64,
    next_vm_gen: u64,
    mallocs: HashMap<usize, usize>,
    quarantine: VecDeque<(usize, Layout)>,
    quarantine_bytes: usize,
    calls: [u64; KINDS],
    faults: [Option<u64>; KINDS],
    fault_hits: [u64; KINDS],
    /// The sizes asked of the kpi_malloc calls made to fail.
    failed_mallocs: Vec<usize>,
    hooks: Vec<(At, HookFn)>,
    walk_no: u64,
    jitter: bool,
    violations: Vec<String>,
    /// The kpi services called with ksyms_lock held by the caller, in order (and
    /// "object teardown" when a VM object's last reference went under it).
    locked_calls: Vec<&'static str>,
    release: Release,
    /// (hint, length) of every kpi_map_object call that reached the VM, in order.
    map_tries: Vec<(u64, u64)>,
    /// The open file whose opening had a kpi_map_object failure injected.
    map_fault_open: Option<u64>,
    probes: Vec<Probe>,
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fn world() -> MutexGuard<'static, Option<World>> {
    WORLD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the world; a service called while no kernel is booted is a violation
/// printed at once (it cannot be attached to a test).
fn with<R>(f: impl FnOnce(&mut World) -> R) -> R {
    let mut g = world();
    match g.as_mut() {
        Some(w) => f(w),
        None => fatal("a kpi service was called while no simulated kernel is booted"),
    }
}

fn violation(w: &mut World, msg: String) {
    eprintln!("sim: violation: {msg}");
    w.violations.push(msg);
}

fn report(msg: String) {
    with(|w| violation(w, msg));
}

const QUARANTINE_LIMIT: usize = 32 << 20;
const MALLOC_ALIGN: usize = 16;
const POISON: u8 = 0xdb;
const MAX_OBJECT: u64 = 1 << 30;

impl World {
    /// A linker file made as linker_make_file does: the next id not in use
    /// (LINKER_GET_NEXT_FILE_ID, which leaves the counter at the id it gives), a
    /// load count never reused, and a new struct unless `slot` reuses one.
    fn new_file(&mut self, file: SimFile, slot: Option<u64>) -> Arc<Loaded> {
        while self.files.iter().any(|f| f.id == self.next_lf_id) {
            self.next_lf_id += 1;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        Arc::new(Loaded {
            id: self.next_lf_id,
            serial,
            slot: slot.unwrap_or(serial),
            file,
        })
    }

    fn fresh() -> World {
        World {
            cache_enabled: true,
            next_lf_id: 1,
            next_serial: 1,
            next_pid: 100,
            next_fp: 1,
            next_obj: 1,
            next_page: 1,
            next_vm_gen: 1,
            ..Default::default()
        }
    }

    /// Counts a call; returns (call number, whether to fail it) and the hooks due.
    fn bump(&mut self, kind: Kind) -> (bool, Vec<HookFn>) {
        let i = kind.index();
        self.calls[i] += 1;
        let n = self.calls[i];
        let fail = self.faults[i] == Some(n);
        if fail {
            self.faults[i] = None;
            self.fault_hits[i] += 1;
        }
        let due = self.take_hooks(|at| at == At::Call(kind, n));
        (fail, due)
    }

    fn take_hooks(&mut self, pred: impl Fn(At) -> bool) -> Vec<HookFn> {
        let mut due = Vec::new();
        let mut keep = Vec::new();
        for (at, f) in self.hooks.drain(..) {
            if pred(at) {
                due.push(f);
            } else {
                keep.push((at, f));
            }
        }
        self.hooks = keep;
        due
    }

    fn obj(&mut self, p: *mut sys::vm_object, what: &str) -> Option<u64> {
        let id = decode(TAG_OBJ, p as usize);
        match id {
            Some(id) if self.objects.contains_key(&id) => Some(id),
            Some(id) if id < self.next_obj => {
                violation(
                    self,
                    format!("{what}: use of VM object {id} after its last release"),
                );
                None
            }
            _ => {
                violation(self, format!("{what}: {p:?} is not a VM object"));
                None
            }
        }
    }

    fn release_obj(&mut self, id: u64, what: &str) {
        match self.objects.get_mut(&id) {
            Some(o) if o.refs > 0 => {
                o.refs -= 1;
                if o.refs == 0 && o.busy > 0 {
                    // vm_object_terminate would wait for the busy pages forever.
                    let busy = o.busy;
                    violation(
                        self,
                        format!("{what}: last reference to VM object {id} with {busy} pages busy"),
                    );
                    return;
                }
                if o.refs == 0 {
                    self.objects.remove(&id);
                    self.dead_objects += 1;
                    if KSYMS.held_by_me() && !PROBING.with(Cell::get) {
                        self.locked_calls.push("object teardown");
                    }
                }
            }
            _ => violation(
                self,
                format!("{what}: VM object {id} released too many times"),
            ),
        }
    }

    fn new_obj(&mut self, size: u64, anon: bool) -> u64 {
        let id = self.next_obj;
        self.next_obj += 1;
        let len = round_page(size).unwrap_or(0) as usize;
        self.objects.insert(
            id,
            Obj {
                refs: 1,
                data: vec![0; len],
                valid: vec![false; len / PAGE as usize],
                busy: 0,
                recycled: 0,
                mapped: false,
                anon,
            },
        );
        id
    }

    /// A new anonymous object of `obj_size` bytes, mapped at `[addr, addr + len)` in
    /// `pid`'s map (mmap(2) of MAP_ANON or MAP_GUARD with MAP_FIXED), unless the
    /// range wraps or overlaps a mapping; the object's id.
    fn map_new_anon(&mut self, pid: Pid, addr: u64, len: u64, obj_size: u64) -> Option<u64> {
        let end = addr.checked_add(len)?;
        if self.procs[&pid]
            .maps
            .values()
            .any(|m| m.addr < end && addr < m.addr + m.len)
        {
            return None;
        }
        let obj = self.new_obj(obj_size, true);
        self.objects.get_mut(&obj).unwrap().mapped = true;
        let m = Mapping {
            addr,
            len,
            obj,
            offset: 0,
            origin: Origin::Anon,
        };
        self.procs.get_mut(&pid).unwrap().maps.insert(addr, m);
        Some(obj)
    }

    fn live_proc(&mut self, pid: Pid, what: &str) -> bool {
        match self.procs.get(&pid) {
            Some(p) if p.state != PState::Dead => true,
            _ => {
                violation(self, format!("{what}: process {pid} does not exist"));
                false
            }
        }
    }

    /// `vm_mmap_object` into `pid`'s own map without MAP_FIXED: where
    /// `vm_map_find_min` of the simulated release puts `len` bytes given `hint`.
    fn place(&self, pid: Pid, hint: u64, len: u64) -> Option<u64> {
        let p = self.procs.get(&pid)?;
        vm_map_find_min(self.release, &p.layout, &p.maps, hint, len)
    }

    fn drop_maps(&mut self, pid: Pid) {
        let maps = match self.procs.get_mut(&pid) {
            Some(p) => std::mem::take(&mut p.maps),
            None => return,
        };
        for m in maps.values() {
            self.release_obj(m.obj, "address space teardown");
        }
    }

    fn new_vm(&mut self, pid: Pid) {
        let gen = self.next_vm_gen;
        self.next_vm_gen += 1;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.vm_gen = gen;
            // A new image has its own data segment; resource limits survive exec.
            let data_limit = p.layout.data_limit;
            p.layout = VmLayout {
                data_limit,
                ..VmLayout::default_for(p.is32)
            };
        }
    }
}

// ---------------------------------------------------------------------------
// Thread context: curthread's process and the open file of the current call
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Ctx {
    pid: Option<Pid>,
    fp: Option<u64>,
    opening: bool,
}

thread_local! {
    static CTX: Cell<Ctx> = const { Cell::new(Ctx { pid: None, fp: None, opening: false }) };
    /// The linker files whose callbacks this thread is inside of.
    static WALK: std::cell::RefCell<Vec<Arc<Loaded>>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct CtxGuard(Ctx, NoUnwind);

impl Drop for CtxGuard {
    fn drop(&mut self) {
        CTX.with(|c| c.set(self.0));
    }
}

/// Sets the thread's context for a call into the device (restored on drop).
fn enter(pid: Option<Pid>, fp: Option<u64>, opening: bool) -> CtxGuard {
    CTX.with(|c| {
        let old = c.get();
        c.set(Ctx { pid, fp, opening });
        CtxGuard(old, NoUnwind::new())
    })
}

thread_local! {
    static NO_UNWIND: Cell<u32> = const { Cell::new(0) };
    /// Whether this thread is inside the cdevpriv destructor.
    static IN_DTOR: Cell<bool> = const { Cell::new(false) };
}

/// devfs runs the cdevpriv destructor outside any count destroy_dev(9) waits for:
/// whatever the destructor does, a kldunload may come at any moment, and the device
/// must refuse it until the destructor is done (past that, the destructor may only
/// return). So at each kernel service the destructor calls without ksyms_lock, a
/// kldunload from another thread is tried, and its success reported.
fn dtor_service(name: &str) {
    if !IN_DTOR.with(Cell::get) || KSYMS.held_by_me() || PROBING.with(Cell::get) {
        return;
    }
    PROBING.with(|p| p.set(true));
    let r = {
        let _c = enter(None, None, false);
        // SAFETY: MOD_UNLOAD, as the shim calls it (from another thread, in effect).
        unsafe { sys::ksyms_rs_unload() }
    };
    if r == 0 {
        report(format!(
            "{name} called by the cdevpriv destructor while a kldunload could \
             unload the code: MOD_UNLOAD succeeded"
        ));
        // Back to the loaded state, so that the test can go on.
        // SAFETY: MOD_LOAD.
        unsafe { sys::ksyms_rs_load() };
    }
    PROBING.with(|p| p.set(false));
}

thread_local! {
    /// Whether this thread is trying an unload for dtor_service: its kpi calls are
    /// not the device's own (not counted, hooked, failed or recorded).
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Records a kpi service called with ksyms_lock held.
fn under_lock(name: &'static str) {
    if KSYMS.held_by_me() && !PROBING.with(Cell::get) {
        with(|w| w.locked_calls.push(name));
    }
}

/// Marks the destructor's run on this thread.
struct InDtor;

impl InDtor {
    fn new() -> InDtor {
        IN_DTOR.with(|d| d.set(true));
        InDtor
    }
}

impl Drop for InDtor {
    fn drop(&mut self) {
        IN_DTOR.with(|d| d.set(false));
    }
}

/// Marks code a panic cannot unwind out of (kpi services and device entry points are
/// `extern "C"`): a panic there aborts the process, and the harness's captured
/// output with it, so the panic hook writes such a panic straight to stderr.
struct NoUnwind;

impl NoUnwind {
    fn new() -> NoUnwind {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if NO_UNWIND.with(|d| d.get()) > 0 {
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(
                        format!("\nsimulated kernel: panic that cannot unwind (in a kpi service or a device call): {info}\n")
                            .as_bytes(),
                    );
                }
                prev(info);
            }));
        });
        NO_UNWIND.with(|d| d.set(d.get() + 1));
        NoUnwind
    }
}

impl Drop for NoUnwind {
    fn drop(&mut self) {
        NO_UNWIND.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

fn ctx() -> Ctx {
    CTX.with(|c| c.get())
}

fn run_hooks(hooks: Vec<HookFn>) {
    // A hook stands for another thread's action (a kldload, an exit): it is not
    // the destructor's own work, even when it runs inside it.
    let in_dtor = IN_DTOR.with(|d| d.replace(false));
    for h in hooks {
        h(Sim);
    }
    IN_DTOR.with(|d| d.set(in_dtor));
}

/// Counts a call of `kind`, runs the hooks due, and says whether to fail it.
fn bump(kind: Kind) -> bool {
    if PROBING.with(Cell::get) {
        return false;
    }
    let (fail, hooks, jitter) = with(|w| {
        let (fail, hooks) = w.bump(kind);
        (fail, hooks, w.jitter)
    });
    run_hooks(hooks);
    if jitter {
        std::thread::yield_now();
    }
    fail
}

// ---------------------------------------------------------------------------
// The kpi_* services (kmod/ksyms_kpi.h), as the shim provides them
// ---------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn kpi_malloc(size: usize) -> *mut c_void {
    let _nu = NoUnwind::new();
    under_lock("kpi_malloc");
    if bump(Kind::Malloc) {
        with(|w| w.failed_mallocs.push(size));
        return std::ptr::null_mut();
    }
    let Ok(layout) = Layout::from_size_align(size.max(1), MALLOC_ALIGN) else {
        return std::ptr::null_mut();
    };
    if size > MAX_OBJECT as usize {
        return std::ptr::null_mut();
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return p.cast();
    }
    with(|w| w.mallocs.insert(p as usize, size));
    p.cast()
}

#[no_mangle]
pub extern "C" fn kpi_free(p: *mut c_void) {
    let _nu = NoUnwind::new();
    under_lock("kpi_free");
    bump(Kind::Free);
    dtor_service("kpi_free");
    if p.is_null() {
        return;
    }
    let freed = with(|w| {
        let Some(size) = w.mallocs.remove(&(p as usize)) else {
            violation(
                w,
                format!("kpi_free({p:?}): not a live kpi_malloc block (double or invalid free)"),
            );
            return None;
        };
        let layout = Layout::from_size_align(size.max(1), MALLOC_ALIGN).unwrap();
        // Poison and keep a while, so that a use after free reads garbage.
        // SAFETY: the block is live and `layout.size()` bytes long.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), POISON, layout.size()) };
        w.quarantine.push_back((p as usize, layout));
        w.quarantine_bytes += layout.size();
        let mut out = Vec::new();
        while w.quarantine_bytes > QUARANTINE_LIMIT {
            let (q, l) = w.quarantine.pop_front().unwrap();
            w.quarantine_bytes -= l.size();
            out.push((q, l));
        }
        Some(out)
    });
    for (q, l) in freed.into_iter().flatten() {
        // SAFETY: q was allocated with l and left the live set and the quarantine.
        unsafe { std::alloc::dealloc(q as *mut u8, l) };
    }
}

#[no_mangle]
pub extern "C" fn kpi_lock() {
    let _nu = NoUnwind::new();
    bump(Kind::Lock);
    KSYMS.lock();
}

#[no_mangle]
pub extern "C" fn kpi_unlock() {
    let _nu = NoUnwind::new();
    if !KSYMS.unlock() {
        report("kpi_unlock by a thread that does not hold ksyms_lock".into());
    }
}

#[no_mangle]
pub extern "C" fn kpi_linker_foreach(cb: sys::kpi_linker_cb, ctx_: *mut c_void) -> c_int {
    let _nu = NoUnwind::new();
    under_lock("kpi_linker_foreach");
    bump(Kind::LinkerForeach);
    let walk_no = with(|w| {
        w.walk_no += 1;
        w.walk_no
    });
    if KSYMS.held_by_me() {
        report("lock order: linker walk (kld_sx) with ksyms_lock held".into());
    }
    let Some(cb) = cb else {
        report("kpi_linker_foreach with a NULL callback".into());
        return EINVAL;
    };
    KLD.lock();
    let mut ret = 0;
    let mut idx = 0usize;
    let mut step = 0u64;
    while let Some(file) = with(|w| w.files.get(idx).cloned()) {
        let handle = encode(TAG_LF, file.slot) as *mut sys::linker_file;
        WALK.with(|s| s.borrow_mut().push(file));
        // SAFETY: the callback is the device's, called as linker_file_foreach would.
        ret = unsafe { cb(handle, ctx_) };
        WALK.with(|s| s.borrow_mut().pop());
        step += 1;
        let hooks = with(|w| w.take_hooks(|at| at == At::WalkStep(walk_no, step)));
        run_hooks(hooks);
        if ret != 0 {
            break;
        }
        idx += 1;
    }
    KLD.unlock();
    let hooks = with(|w| w.take_hooks(|at| at == At::WalkEnd(walk_no)));
    run_hooks(hooks);
    ret
}

/// The linker file of the current callback for `lf`, or a violation.
fn walking(lf: *mut sys::linker_file, what: &str) -> Option<Arc<Loaded>> {
    let slot = decode(TAG_LF, lf as usize);
    let found = WALK.with(|s| {
        s.borrow()
            .iter()
            .rev()
            .find(|f| Some(f.slot) == slot)
            .cloned()
    });
    if found.is_none() {
        report(format!(
            "{what}({lf:?}): not the linker file of a callback in progress"
        ));
    }
    found
}

#[no_mangle]
pub extern "C" fn kpi_linker_file(lf: *mut sys::linker_file, out: *mut sys::kpi_linker_file) {
    let _nu = NoUnwind::new();
    under_lock("kpi_linker_file");
    let Some(f) = walking(lf, "kpi_linker_file") else {
        return;
    };
    if out.is_null() {
        report("kpi_linker_file with a NULL out pointer".into());
        return;
    }
    let lie = &f.file.lie;
    let mut symtab = f.file.syms.as_ptr().cast::<u8>();
    if lie.symtab_null {
        symtab = std::ptr::null();
    } else if lie.symtab_misaligned {
        symtab = symtab.wrapping_add(4);
    }
    let strtab = if lie.strtab_null {
        std::ptr::null()
    } else {
        f.file.strs.as_ptr().cast::<c_char>()
    };
    // SAFETY: checked non-null above; the device passes a valid out pointer.
    unsafe {
        out.write(sys::kpi_linker_file {
            symtab: symtab.cast(),
            strtab,
            nsyms: lie.symtab_count.unwrap_or(f.file.syms.len() as i64) as c_long,
            strsz: lie.strtab_len.unwrap_or(f.file.strs.len() as i64) as c_long,
            id: f.id,
            loadcnt: f.serial as c_int,
        })
    };
}

#[no_mangle]
pub extern "C" fn kpi_symbol_value(
    lf: *mut sys::linker_file,
    sym: *const c_void,
    value: *mut u64,
) -> c_int {
    let _nu = NoUnwind::new();
    under_lock("kpi_symbol_value");
    bump(Kind::SymbolValue);
    let Some(f) = walking(lf, "kpi_symbol_value") else {
        return EINVAL;
    };
    let base = f.file.syms.as_ptr() as usize;
    let at = sym as usize;
    let n = f.file.syms.len();
    if at < base || !(at - base).is_multiple_of(24) || (at - base) / 24 >= n || value.is_null() {
        report(format!(
            "kpi_symbol_value: {sym:?} is not a symbol of {} (or NULL out pointer)",
            f.file.name
        ));
        return EINVAL;
    }
    if f.file.is_kernel_file() {
        report(format!(
            "kpi_symbol_value asked of the kernel ({})",
            f.file.name
        ));
    }
    match f.file.resolve((at - base) / 24) {
        Some(v) => {
            // SAFETY: checked non-null above.
            unsafe { value.write(v) };
            0
        }
        None => ENOENT,
    }
}

#[no_mangle]
pub extern "C" fn kpi_object_alloc(size: u64) -> *mut sys::vm_object {
    let _nu = NoUnwind::new();
    under_lock("kpi_object_alloc");
    if bump(Kind::ObjectAlloc) || size > MAX_OBJECT {
        return std::ptr::null_mut();
    }
    let id = with(|w| w.new_obj(size, false));
    encode(TAG_OBJ, id) as *mut sys::vm_object
}

#[no_mangle]
pub extern "C" fn kpi_object_recycle(obj: *mut sys::vm_object, size: u64) -> c_int {
    let _nu = NoUnwind::new();
    under_lock("kpi_object_recycle");
    if bump(Kind::ObjectRecycle) {
        return EBUSY;
    }
    with(|w| {
        let Some(id) = w.obj(obj, "kpi_object_recycle") else {
            return EINVAL;
        };
        if size > MAX_OBJECT {
            violation(w, format!("kpi_object_recycle: {size} bytes"));
            return EINVAL;
        }
        let o = w.objects.get_mut(&id).unwrap();
        if o.anon {
            violation(w, format!("kpi_object_recycle: VM object {id} is not ours"));
            return EINVAL;
        }
        let keep = round_page(size).unwrap_or(u64::MAX);
        if o.refs != 1 || keep > o.data.len() as u64 {
            return EBUSY;
        }
        if o.busy > 0 {
            // One reference, the caller's: nobody else can hold its pages.
            violation(
                w,
                format!("kpi_object_recycle: VM object {id} has pages busy"),
            );
            return EINVAL;
        }
        // Pages past the new size are freed (a new page there would read as zeros);
        // those below keep their old bytes, not written yet in this build.
        o.data[keep as usize..].fill(0);
        o.valid.fill(false);
        o.mapped = false;
        o.recycled += 1;
        0
    })
}

#[no_mangle]
pub extern "C" fn kpi_object_ref(obj: *mut sys::vm_object) {
    let _nu = NoUnwind::new();
    under_lock("kpi_object_ref");
    with(|w| {
        if let Some(id) = w.obj(obj, "kpi_object_ref") {
            w.objects.get_mut(&id).unwrap().refs += 1;
        }
    })
}

#[no_mangle]
pub extern "C" fn kpi_object_release(obj: *mut sys::vm_object) {
    let _nu = NoUnwind::new();
    under_lock("kpi_object_release");
    dtor_service("kpi_object_release");
    with(|w| {
        if let Some(id) = w.obj(obj, "kpi_object_release") {
            w.release_obj(id, "kpi_object_release");
        }
    })
}

/// A simulated `struct uio` for a read: offset, residual count, and the caller's
/// buffer of `len` bytes (the "user" destination, filled from the start).
#[repr(C)]
pub struct SimUio {
    pub offset: i64,
    pub resid: usize,
    pub dst: *mut u8,
    pub len: usize,
}

#[no_mangle]
pub extern "C" fn kpi_object_read(
    obj: *mut sys::vm_object,
    obj_size: u64,
    uio: *mut sys::uio,
) -> c_int {
    let _nu = NoUnwind::new();
    under_lock("kpi_object_read");
    if bump(Kind::ObjectRead) {
        return EFAULT;
    }
    if uio.is_null() {
        report("kpi_object_read with a NULL uio".into());
        return EINVAL;
    }
    // SAFETY: the simulator passes a &mut SimUio as the device's uio, live for the call.
    let uio = unsafe { &mut *uio.cast::<SimUio>() };
    with(|w| {
        let Some(id) = w.obj(obj, "kpi_object_read") else {
            return EINVAL;
        };
        if w.objects[&id].busy > 0 {
            violation(
                w,
                format!("kpi_object_read: VM object {id} read with pages still busy"),
            );
        }
        let data = &w.objects.get(&id).unwrap().data;
        if obj_size > data.len() as u64 || uio.offset < 0 {
            let msg = format!(
                "kpi_object_read: size {obj_size} > object {id} ({} bytes) or negative offset {}",
                data.len(),
                uio.offset
            );
            violation(w, msg);
            return EINVAL;
        }
        let off = uio.offset as u64;
        if off >= obj_size {
            return 0;
        }
        let n = (obj_size - off).min(uio.resid as u64) as usize;
        let done = uio.len - uio.resid;
        let src = &w.objects.get(&id).unwrap().data[off as usize..off as usize + n];
        // SAFETY: dst is the caller's buffer of len bytes, and done + n <= len.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), uio.dst.add(done), n) };
        uio.resid -= n;
        uio.offset += n as i64;
        0
    })
}

/// A page held through kpi_object_pages_grab: its own buffer, filled with garbage
/// (a page is not zeroed), copied into the object when released as written.
struct SimPage {
    obj: u64,
    index: usize,
    buf: Box<[u8]>,
}

/// What a fresh page holds before anyone writes it: not zeros.
const GARBAGE: u8 = 0xa5;

#[no_mangle]
pub extern "C" fn kpi_object_pages_grab(
    obj: *mut sys::vm_object,
    pindex: u64,
    count: c_int,
    m: *mut *mut sys::vm_page,
    va: *mut *mut c_void,
) -> c_int {
    let _nu = NoUnwind::new();
    under_lock("kpi_object_pages_grab");
    if bump(Kind::PageGrab) {
        return 0;
    }
    with(|w| {
        let Some(id) = w.obj(obj, "kpi_object_pages_grab") else {
            return 0;
        };
        let o = w.objects.get(&id).unwrap();
        let pages = o.valid.len() as u64;
        let (mapped, refs) = (o.mapped, o.refs);
        if m.is_null() || va.is_null() || count <= 0 {
            violation(
                w,
                format!("kpi_object_pages_grab: NULL arrays or count {count}"),
            );
            return 0;
        }
        if mapped || refs != 1 {
            violation(
                w,
                format!("kpi_object_pages_grab: VM object {id} written while mapped or shared ({refs} references)"),
            );
        }
        let mut n = 0usize;
        while n < count as usize && pindex + (n as u64) < pages {
            let index = (pindex + n as u64) as usize;
            if w.pages.values().any(|p| p.obj == id && p.index == index) {
                // vm_page_grab would sleep on our own busy page forever.
                violation(
                    w,
                    format!(
                        "kpi_object_pages_grab: page {index} of VM object {id} grabbed while held"
                    ),
                );
                break;
            }
            if w.objects[&id].valid[index] {
                // The shim would hand it out: a page written twice in one build.
                violation(
                    w,
                    format!("kpi_object_pages_grab: page {index} of VM object {id} grabbed again after it was written"),
                );
                break;
            }
            let mut buf = vec![GARBAGE; PAGE as usize].into_boxed_slice();
            let handle = w.next_page;
            w.next_page += 1;
            // SAFETY: the device passes arrays of `count` entries; n < count.
            unsafe {
                va.add(n).write(buf.as_mut_ptr().cast());
                m.add(n)
                    .write(encode(TAG_PAGE, handle) as *mut sys::vm_page);
            }
            w.objects.get_mut(&id).unwrap().busy += 1;
            w.pages.insert(
                handle,
                SimPage {
                    obj: id,
                    index,
                    buf,
                },
            );
            n += 1;
        }
        n as c_int
    })
}

#[no_mangle]
pub extern "C" fn kpi_object_pages_release(
    m: *const *mut sys::vm_page,
    count: c_int,
    written: c_int,
) {
    let _nu = NoUnwind::new();
    under_lock("kpi_object_pages_release");
    bump(Kind::PageRelease);
    if m.is_null() || count <= 0 {
        report(format!(
            "kpi_object_pages_release: NULL array or count {count}"
        ));
        return;
    }
    for i in 0..count as usize {
        // SAFETY: the device passes an array of `count` page pointers.
        let page = unsafe { m.add(i).read() };
        with(|w| {
            let held = decode(TAG_PAGE, page as usize).and_then(|h| w.pages.remove(&h));
            let Some(held) = held else {
                violation(
                    w,
                    format!("kpi_object_pages_release: {page:?} is not a grabbed page"),
                );
                return;
            };
            let Some(o) = w.objects.get_mut(&held.obj) else {
                violation(w, "kpi_object_pages_release: its VM object is gone".into());
                return;
            };
            o.busy -= 1;
            if written != 0 {
                let at = held.index * PAGE as usize;
                o.data[at..at + PAGE as usize].copy_from_slice(&held.buf);
                o.valid[held.index] = true;
            }
        })
    }
}

#[no_mangle]
pub extern "C" fn kpi_curproc() -> *mut sys::proc_ {
    let _nu = NoUnwind::new();
    under_lock("kpi_curproc");
    match ctx().pid {
        Some(pid) => encode(TAG_PROC, pid) as *mut sys::proc_,
        None => {
            report("kpi_curproc outside a process context (kld event?)".into());
            std::ptr::null_mut()
        }
    }
}

#[no_mangle]
pub extern "C" fn kpi_vm_layout(layout: *mut sys::kpi_vm_layout) {
    let _nu = NoUnwind::new();
    under_lock("kpi_vm_layout");
    let Some(pid) = ctx().pid else {
        report("kpi_vm_layout outside a process context".into());
        return;
    };
    with(|w| {
        if layout.is_null() {
            violation(w, "kpi_vm_layout: NULL out pointer".into());
            return;
        }
        if !w.live_proc(pid, "kpi_vm_layout") {
            return;
        }
        let l = w.procs[&pid].layout;
        // SAFETY: checked non-null; the caller passes a valid struct.
        unsafe {
            layout.write(sys::kpi_vm_layout {
                map_min: l.map_min,
                map_max: l.map_max,
                data_start: l.data_start,
                data_limit: l.data_limit,
            })
        };
    })
}

#[no_mangle]
pub extern "C" fn kpi_map_object(
    obj: *mut sys::vm_object,
    len: u64,
    hint: u64,
    uaddr: *mut u64,
) -> c_int {
    let _nu = NoUnwind::new();
    under_lock("kpi_map_object");
    // An injected failure stands for a limit of the process (racct's RLIMIT_VMEM in
    // kern_mmap_racct_check): every later try of the same open fails too.
    let failing = ctx().fp;
    if bump(Kind::MapObject) {
        with(|w| w.map_fault_open = failing);
        return ENOMEM;
    }
    if failing.is_some() && with(|w| w.map_fault_open) == failing {
        return ENOMEM;
    }
    let Some(pid) = ctx().pid else {
        report("kpi_map_object outside a process context".into());
        return EINVAL;
    };
    with(|w| {
        let Some(id) = w.obj(obj, "kpi_map_object") else {
            return EINVAL;
        };
        if uaddr.is_null() || !w.live_proc(pid, "kpi_map_object") {
            return EINVAL;
        }
        // The shim's KASSERT: a hint of 0 means different things on 13 and 14.
        if len == 0 || !len.is_multiple_of(PAGE) || hint == 0 || !hint.is_multiple_of(PAGE) {
            violation(
                w,
                format!("kpi_map_object: length {len:#x} or hint {hint:#x} not a non-zero page multiple"),
            );
            return EINVAL;
        }
        if len > w.objects[&id].data.len() as u64 {
            violation(
                w,
                format!("kpi_map_object: {len} bytes of a smaller object {id}"),
            );
            return EINVAL;
        }
        if w.objects[&id].busy > 0 {
            violation(
                w,
                format!("kpi_map_object: VM object {id} mapped with pages still busy"),
            );
        }
        w.map_tries.push((hint, len));
        let Some(addr) = w.place(pid, hint, len) else {
            return ENOMEM;
        };
        let o = w.objects.get_mut(&id).unwrap();
        o.refs += 1;
        o.mapped = true;
        let m = Mapping {
            addr,
            len,
            obj: id,
            offset: 0,
            origin: Origin::Auto,
        };
        w.procs.get_mut(&pid).unwrap().maps.insert(addr, m);
        // SAFETY: checked non-null above.
        unsafe { uaddr.write(addr) };
        0
    })
}

#[no_mangle]
pub extern "C" fn kpi_unmap_object(
    p: *mut sys::proc_,
    uaddr: u64,
    len: u64,
    obj: *mut sys::vm_object,
) {
    let _nu = NoUnwind::new();
    under_lock("kpi_unmap_object");
    bump(Kind::UnmapObject);
    if !KSYMS.held_by_me() {
        report("kpi_unmap_object without ksyms_lock held".into());
    }
    with(|w| {
        let Some(id) = w.obj(obj, "kpi_unmap_object") else {
            return;
        };
        let Some(pid) = decode(TAG_PROC, p as usize) else {
            violation(w, format!("kpi_unmap_object: {p:?} is not a process"));
            return;
        };
        if !w.live_proc(pid, "kpi_unmap_object") {
            return;
        }
        let pr = &w.procs[&pid];
        if pr.gone_gen == Some(pr.vm_gen) {
            violation(
                w,
                format!("kpi_unmap_object on process {pid} after its process_exit/exec event"),
            );
            return;
        }
        // The shim's KASSERT.
        if len == 0 || !len.is_multiple_of(PAGE) || uaddr.checked_add(len).is_none() {
            violation(
                w,
                format!("kpi_unmap_object: length {len:#x} at {uaddr:#x}"),
            );
            return;
        }
        let pr = w.procs.get_mut(&pid).unwrap();
        let exact = pr
            .maps
            .get(&uaddr)
            .is_some_and(|m| m.len == len && m.obj == id);
        if exact {
            pr.maps.remove(&uaddr);
            w.release_obj(id, "kpi_unmap_object");
        }
    })
}

#[no_mangle]
pub extern "C" fn kpi_set_cdevpriv(priv_: *mut c_void) -> c_int {
    let _nu = NoUnwind::new();
    under_lock("kpi_set_cdevpriv");
    if bump(Kind::SetCdevpriv) {
        return EBUSY;
    }
    let c = ctx();
    with(|w| {
        let Some(fp) = c.fp.filter(|_| c.opening) else {
            violation(w, "kpi_set_cdevpriv outside d_open".into());
            return EINVAL;
        };
        let f = w.fps.get_mut(&fp).unwrap();
        if f.cdevpriv.is_some() {
            return EBUSY;
        }
        f.cdevpriv = Some(priv_ as usize);
        0
    })
}

#[no_mangle]
pub extern "C" fn kpi_get_cdevpriv(priv_: *mut *mut c_void) -> c_int {
    let _nu = NoUnwind::new();
    under_lock("kpi_get_cdevpriv");
    bump(Kind::GetCdevpriv);
    let c = ctx();
    with(|w| {
        let Some(fp) = c.fp else {
            violation(w, "kpi_get_cdevpriv outside a call on an open file".into());
            return EBADF;
        };
        match w.fps.get(&fp).and_then(|f| f.cdevpriv) {
            Some(p) if !priv_.is_null() => {
                // SAFETY: checked non-null.
                unsafe { priv_.write(p as *mut c_void) };
                0
            }
            _ => EBADF,
        }
    })
}

#[no_mangle]
pub extern "C" fn kpi_probe(probe: c_int, a0: u64, a1: u64, a2: u64, a3: u64) {
    let _nu = NoUnwind::new();
    under_lock("kpi_probe");
    // DTrace reads an int argument from the low 32 bits of its 64.
    let int = |a: u64| a as u32 as i32;
    let fired = match probe {
        sys::KPI_PROBE_BUILD_START => Probe::BuildStart {
            attempt: u32::try_from(a0).unwrap_or(u32::MAX),
        },
        sys::KPI_PROBE_BUILD_DONE => Probe::BuildDone {
            attempt: u32::try_from(a0).unwrap_or(u32::MAX),
            error: int(a1),
            size: a2,
            symbols: a3,
        },
        sys::KPI_PROBE_CACHE_HIT => Probe::CacheHit { size: a0 },
        sys::KPI_PROBE_MAP => Probe::Map {
            hint: a0,
            len: a1,
            error: int(a2),
            addr: a3,
        },
        sys::KPI_PROBE_OPEN_REFUSED => Probe::OpenRefused { error: int(a0) },
        sys::KPI_PROBE_RECYCLE => Probe::Recycle {
            size: a0,
            error: int(a1),
        },
        sys::KPI_PROBE_REUSE => Probe::Reuse {
            files: a0 as u32,
            pages: a1,
            modules: a2 as u32,
        },
        _ => {
            report(format!("kpi_probe: no probe {probe}"));
            return;
        }
    };
    // Arguments past the probe's own are 0.
    let used = match fired {
        Probe::BuildStart { .. } | Probe::CacheHit { .. } | Probe::OpenRefused { .. } => 1,
        Probe::Recycle { .. } => 2,
        Probe::Reuse { .. } => 3,
        Probe::BuildDone { .. } | Probe::Map { .. } => 4,
    };
    if [a0, a1, a2, a3][used..].iter().any(|&a| a != 0) {
        report(format!(
            "kpi_probe: {fired:?} with extra arguments {a0} {a1} {a2} {a3}"
        ));
    }
    with(|w| w.probes.push(fired));
}

#[no_mangle]
pub extern "C" fn kpi_panic(msg: *const c_char, len: usize) -> ! {
    let _nu = NoUnwind::new();
    let text = if msg.is_null() {
        String::new()
    } else {
        // SAFETY: the device passes len bytes at msg.
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) })
            .into_owned()
    };
    fatal(&format!("kpi_panic: {text}"))
}

/// The simulator's definitions have exactly the types of the generated bindings.
#[allow(clippy::type_complexity)]
fn _signatures_match_bindings() {
    macro_rules! same {
        ($($name:ident ( $($a:tt),* ) ;)*) => {
            $( let _ = [
                sys::$name as unsafe extern "C" fn($($a),*) -> _,
                $name as unsafe extern "C" fn($($a),*) -> _,
            ]; )*
        };
    }
    same! {
        kpi_malloc(_); kpi_free(_); kpi_lock(); kpi_unlock(); kpi_linker_foreach(_, _);
        kpi_linker_file(_, _); kpi_symbol_value(_, _, _);
        kpi_object_alloc(_); kpi_object_recycle(_, _); kpi_object_ref(_);
        kpi_object_release(_); kpi_object_read(_, _, _);
        kpi_object_pages_grab(_, _, _, _, _); kpi_object_pages_release(_, _, _);
        kpi_curproc(); kpi_vm_layout(_); kpi_map_object(_, _, _, _);
        kpi_unmap_object(_, _, _, _); kpi_set_cdevpriv(_); kpi_get_cdevpriv(_);
        kpi_probe(_, _, _, _, _);
        kpi_panic(_, _);
    }
}

// ---------------------------------------------------------------------------
// The kernel around the device, as tests drive it
// ---------------------------------------------------------------------------

/// What is alive in the simulated kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    pub mallocs: usize,
    pub malloc_bytes: usize,
    pub objects: usize,
    pub object_refs: u64,
    /// Pages grabbed for writing and not released.
    pub pages_held: usize,
    pub mappings: usize,
    pub cdevprivs: usize,
    pub open_files: usize,
}

/// A handle on the simulated kernel (all state is global; see [`Kernel`]).
#[derive(Clone, Copy, Debug)]
pub struct Sim;

static GATE: Mutex<()> = Mutex::new(());

/// The booted kernel of one test; dropping it shuts down and checks accounting.
pub struct Kernel {
    _gate: MutexGuard<'static, ()>,
    watchdog: Option<Watchdog>,
    done: bool,
}

impl std::ops::Deref for Kernel {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &Sim
    }
}

/// Seconds after which a test is considered deadlocked (KSYMS_SIM_WATCHDOG).
fn watchdog_secs() -> u64 {
    std::env::var("KSYMS_SIM_WATCHDOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

/// Aborts the test binary with `what` unless dropped within `limit`.
pub struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

pub fn watchdog(limit: Duration, what: &str) -> Watchdog {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let what = what.to_string();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            fatal(&format!(
                "watchdog: {what} not done after {limit:?} (deadlock?); kld_sx owner {:?}, ksyms_lock owner {:?}",
                KLD.owner(),
                KSYMS.owner()
            ));
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Kernel {
    /// Boots with `kernel` as linker file 1 and `modules` as files 2.. (preloaded:
    /// no kld events), then MOD_LOAD (`ksyms_rs_load`, which must succeed).
    pub fn boot(kernel: SimFile, modules: Vec<SimFile>) -> Kernel {
        let k = Kernel::boot_quiet(kernel, modules);
        let r = {
            let _c = enter(None, None, false);
            // SAFETY: MOD_LOAD, as the shim calls it.
            unsafe { sys::ksyms_rs_load() }
        };
        assert_eq!(r, 0, "ksyms_rs_load");
        with(|w| w.device_loaded = true);
        k
    }

    /// Boots without loading the device.
    pub fn boot_quiet(kernel: SimFile, modules: Vec<SimFile>) -> Kernel {
        let gate = GATE.lock().unwrap_or_else(|e| e.into_inner());
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        KLD.force_release();
        KSYMS.force_release();
        let mut w = World::fresh();
        w.booted = true;
        for f in std::iter::once(kernel).chain(modules) {
            let loaded = w.new_file(f, None);
            w.files.push(loaded);
        }
        *world() = Some(w);
        let dog = watchdog(
            Duration::from_secs(watchdog_secs()),
            &format!("test `{name}`"),
        );
        Kernel {
            _gate: gate,
            watchdog: Some(dog),
            done: false,
        }
    }

    /// Boots with the compiled kernel and the first `n` compiled modules.
    pub fn boot_compiled(n: usize) -> Kernel {
        let c = files::compiled();
        Kernel::boot(c.kernel.clone(), c.modules[..n].to_vec())
    }

    /// Exits every process, unloads the device (which must succeed), and checks that
    /// nothing is left and no violation was recorded. Returns the violations and leaks
    /// instead of panicking when `strict` is false.
    fn finish(&mut self) -> Vec<String> {
        self.done = true;
        let mut problems = Vec::new();
        for pid in Sim.live_procs() {
            Sim.exit(pid);
        }
        if with(|w| w.device_loaded) {
            let r = Sim.unload_device();
            if r != 0 {
                problems.push(format!("ksyms_rs_unload at shutdown: errno {r}"));
            }
        }
        let a = Sim.accounting();
        if a != Accounting::default() {
            problems.push(format!("leak at shutdown: {a:?}"));
        }
        if KLD.owner().is_some() || KSYMS.owner().is_some() {
            problems.push(format!(
                "locks held at shutdown: kld_sx {:?}, ksyms_lock {:?}",
                KLD.owner(),
                KSYMS.owner()
            ));
        }
        problems.extend(Sim.take_violations());
        let quarantine = with(|w| std::mem::take(&mut w.quarantine));
        for (q, l) in quarantine {
            // SAFETY: freed by the device, kept poisoned until now.
            unsafe { std::alloc::dealloc(q as *mut u8, l) };
        }
        self.watchdog = None;
        problems
    }

    /// Shuts down and fails the test on any leak or violation.
    pub fn shutdown(mut self) {
        let problems = self.finish();
        assert!(problems.is_empty(), "simulated kernel: {problems:#?}");
    }

    /// Shuts down and returns the problems (for tests that expect some).
    pub fn shutdown_report(mut self) -> Vec<String> {
        self.finish()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let problems = self.finish();
        if !std::thread::panicking() {
            assert!(problems.is_empty(), "simulated kernel: {problems:#?}");
        }
    }
}

/// A released file reference whose destructor must run outside the world lock.
struct Dtor(usize);

impl Sim {
    // ---- accounting, faults, hooks ----

    pub fn accounting(&self) -> Accounting {
        with(|w| {
            let mut a = Accounting {
                mallocs: w.mallocs.len(),
                malloc_bytes: w.mallocs.values().sum(),
                objects: w.objects.len(),
                object_refs: w.objects.values().map(|o| o.refs).sum(),
                pages_held: w.pages.len(),
                ..Default::default()
            };
            for p in w.procs.values() {
                a.mappings += p.maps.len();
            }
            a.open_files = w.fps.len();
            a.cdevprivs = w.fps.values().filter(|f| f.cdevpriv.is_some()).count();
            a
        })
    }

    /// The kpi services called with ksyms_lock held since the last call (or boot).
    pub fn take_locked_calls(&self) -> Vec<&'static str> {
        with(|w| std::mem::take(&mut w.locked_calls))
    }

    pub fn take_violations(&self) -> Vec<String> {
        with(|w| std::mem::take(&mut w.violations))
    }

    /// Fails with a clear message when a violation was recorded.
    pub fn assert_clean(&self) {
        let v = self.take_violations();
        assert!(v.is_empty(), "contract violations: {v:#?}");
    }

    /// Makes the `n`-th call (1 = the next) of `kind` fail.
    pub fn fail(&self, kind: Kind, n: u64) {
        with(|w| {
            let i = kind.index();
            w.faults[i] = Some(w.calls[i] + n);
        })
    }

    pub fn clear_faults(&self) {
        with(|w| w.faults = Default::default())
    }

    /// How many injected failures of `kind` happened.
    /// Pages handed out by kpi_object_pages_grab since boot.
    pub fn pages_grabbed(&self) -> u64 {
        with(|w| w.next_page - 1)
    }

    /// The sizes of the kpi_malloc blocks not freed yet.
    pub fn malloc_sizes(&self) -> Vec<usize> {
        with(|w| w.mallocs.values().copied().collect())
    }

    /// The sizes asked of the kpi_malloc calls made to fail since boot.
    pub fn failed_mallocs(&self) -> Vec<usize> {
        with(|w| w.failed_mallocs.clone())
    }

    pub fn fault_hits(&self, kind: Kind) -> u64 {
        with(|w| w.fault_hits[kind.index()])
    }

    /// Calls of `kind` since boot.
    pub fn calls(&self, kind: Kind) -> u64 {
        with(|w| w.calls[kind.index()])
    }

    /// Linker walks since boot.
    pub fn walks(&self) -> u64 {
        self.calls(Kind::LinkerForeach)
    }

    /// A module loaded during linker walks 2, 4 and 6 from now: the census walk of
    /// each of three attempts at a snapshot sees a module set that the writing walk
    /// no longer does.
    pub fn change_modules_during_three_attempts(&self) {
        for (i, walk) in [2u64, 4, 6].into_iter().enumerate() {
            self.hook(At::Call(Kind::LinkerForeach, walk), move |sim| {
                sim.kld_load(SimFile::small_module(
                    &format!("changing{i}"),
                    30 + i,
                    7 + i as u64,
                ));
            });
        }
    }

    /// Runs `f` at `at` (numbers counted from now).
    pub fn hook(&self, at: At, f: impl FnOnce(Sim) + Send + 'static) {
        with(|w| {
            let at = match at {
                At::Call(k, n) => At::Call(k, w.calls[k.index()] + n),
                At::WalkStep(n, s) => At::WalkStep(w.walk_no + n, s),
                At::WalkEnd(n) => At::WalkEnd(w.walk_no + n),
            };
            w.hooks.push((at, Box::new(f)));
        })
    }

    /// Drops the hooks that did not run.
    pub fn clear_hooks(&self) {
        let old = with(|w| std::mem::take(&mut w.hooks));
        drop(old);
    }

    pub fn pending_hooks(&self) -> usize {
        with(|w| w.hooks.len())
    }

    /// Yield the CPU at every counted kpi call, to vary interleavings.
    pub fn set_jitter(&self, on: bool) {
        with(|w| w.jitter = on)
    }

    pub fn set_cache_enabled(&self, on: bool) {
        with(|w| w.cache_enabled = on)
    }

    // ---- placement and probes ----

    /// Which release's `vm_map_find_min` the simulated VM follows (14 by default).
    pub fn set_release(&self, release: Release) {
        with(|w| w.release = release)
    }

    /// setrlimit(RLIMIT_DATA)'s hard limit (or compat.ia32.maxdsiz for a 32-bit
    /// process): `lim_max(td, RLIMIT_DATA)` from now on.
    pub fn set_data_limit(&self, pid: Pid, bytes: u64) {
        with(|w| w.procs.get_mut(&pid).unwrap().layout.data_limit = bytes)
    }

    pub fn layout(&self, pid: Pid) -> VmLayout {
        with(|w| w.procs[&pid].layout)
    }

    /// mmap(MAP_GUARD | MAP_FIXED): reserves `[addr, addr + len)` without memory.
    pub fn map_guard(&self, pid: Pid, addr: u64, len: u64) -> bool {
        with(|w| {
            let p = &w.procs[&pid];
            let end = addr.checked_add(len);
            let inside = end.is_some_and(|end| addr >= p.layout.map_min && end <= p.layout.map_max);
            if !inside || len == 0 || !len.is_multiple_of(PAGE) || !addr.is_multiple_of(PAGE) {
                return false;
            }
            w.map_new_anon(pid, addr, len, 0).is_some()
        })
    }

    /// Guards over every free range of `pid`'s map inside `[from, to)`; their count.
    pub fn fill(&self, pid: Pid, from: u64, to: u64) -> usize {
        let gaps: Vec<(u64, u64)> = with(|w| {
            let p = &w.procs[&pid];
            let (lo, hi) = (from.max(p.layout.map_min), to.min(p.layout.map_max));
            let mut gaps = Vec::new();
            let mut at = lo;
            for m in p.maps.values() {
                let (s, e) = (m.addr.max(lo), (m.addr + m.len).min(hi));
                if s >= e {
                    continue;
                }
                if at < s {
                    gaps.push((at, s - at));
                }
                at = at.max(e);
            }
            if at < hi {
                gaps.push((at, hi - at));
            }
            gaps
        });
        for &(addr, len) in &gaps {
            assert!(self.map_guard(pid, addr, len), "guard at {addr:#x}");
        }
        gaps.len()
    }

    /// `vm_map_find_min` of the simulated release on `pid`'s map, without mapping.
    pub fn find_min(&self, pid: Pid, hint: u64, len: u64) -> Option<u64> {
        with(|w| w.place(pid, hint, len))
    }

    /// Every probe fired since boot or the last call, in order.
    pub fn take_probes(&self) -> Vec<Probe> {
        with(|w| std::mem::take(&mut w.probes))
    }

    /// (hint, length) of every kpi_map_object call since boot or the last call.
    pub fn take_map_tries(&self) -> Vec<(u64, u64)> {
        with(|w| std::mem::take(&mut w.map_tries))
    }

    // ---- the module itself ----

    /// MOD_UNLOAD: the device's answer; on 0 the device is gone.
    pub fn unload_device(&self) -> i32 {
        let _c = enter(None, None, false);
        // SAFETY: MOD_UNLOAD, as the shim calls it.
        let r = unsafe { sys::ksyms_rs_unload() };
        if r == 0 {
            with(|w| w.device_loaded = false);
        }
        r
    }

    /// MOD_LOAD again after an unload.
    pub fn load_device(&self) -> i32 {
        let _c = enter(None, None, false);
        // SAFETY: MOD_LOAD.
        let r = unsafe { sys::ksyms_rs_load() };
        if r == 0 {
            with(|w| w.device_loaded = true);
        }
        r
    }

    /// The sysctl debug.ksyms.cached_bytes.
    pub fn cached_bytes(&self) -> u64 {
        let _c = enter(None, None, false);
        // SAFETY: a sysctl handler's call.
        unsafe { sys::ksyms_rs_cached_bytes() }
    }

    /// The sysctl debug.ksyms.spare_bytes.
    pub fn spare_bytes(&self) -> u64 {
        let _c = enter(None, None, false);
        // SAFETY: a sysctl handler's call.
        unsafe { sys::ksyms_rs_spare_bytes() }
    }

    // ---- the kernel linker ----

    /// kldload: links `file` in (it gets the next id) and fires the kld_load event,
    /// with the linker lock held (taken here unless this thread already holds it,
    /// as a mid-walk hook does).
    pub fn kld_load(&self, file: SimFile) -> i32 {
        self.load(file, None)
    }

    /// kldload of `file`, in a new struct linker_file or in `slot`'s.
    fn load(&self, file: SimFile, slot: Option<u64>) -> i32 {
        let _c = enter(None, None, false);
        let take = !KLD.held_by_me();
        if take {
            KLD.lock();
        }
        let id = with(|w| {
            let loaded = w.new_file(file, slot);
            let id = loaded.id;
            w.files.push(loaded);
            id
        });
        // The shim's event handlers exist while the module is loaded.
        if with(|w| w.device_loaded) {
            // SAFETY: the kld_load event handler, linker lock held.
            unsafe { sys::ksyms_rs_kld_changed() };
        }
        if take {
            KLD.unlock();
        }
        id
    }

    /// kldunload of file `id` (the last loaded), then kldload of `file`, which
    /// the kernel gets as malloc may well give it: the same struct linker_file
    /// and, for tables of the same sizes, the same table addresses, and the same
    /// id (the last loaded file's goes to the next); only its load count differs.
    /// Returns the new file's id.
    pub fn kld_replace(&self, id: i32, file: SimFile) -> i32 {
        let old = with(|w| w.files.iter().find(|f| f.id == id).cloned()).expect("no such file");
        let slot = old.slot;
        assert!(self.kld_unload(id));
        // The new tables where the old ones were, when their sizes allow.
        let mut file = file;
        if let Ok(old) = Arc::try_unwrap(old) {
            let (mut syms, mut strs) = (old.file.syms, old.file.strs);
            if syms.len() == file.syms.len() && strs.len() == file.strs.len() {
                syms.copy_from_slice(&file.syms);
                strs.copy_from_slice(&file.strs);
                file.syms = syms;
                file.strs = strs;
            }
        }
        self.load(file, Some(slot))
    }

    /// kldunload of file `id`: kld_unload_try, removal, kld_unload. False when no
    /// such file (the kernel, id 1, cannot be unloaded).
    pub fn kld_unload(&self, id: i32) -> bool {
        let _c = enter(None, None, false);
        let take = !KLD.held_by_me();
        if take {
            KLD.lock();
        }
        let present = id != 1 && with(|w| w.files.iter().any(|f| f.id == id));
        if present {
            let events = with(|w| w.device_loaded);
            if events {
                // SAFETY: the kld_unload_try event handler, linker lock held.
                unsafe { sys::ksyms_rs_kld_changed() };
            }
            with(|w| w.files.retain(|f| f.id != id));
            if events {
                // SAFETY: the kld_unload event handler.
                unsafe { sys::ksyms_rs_kld_changed() };
            }
        }
        if take {
            KLD.unlock();
        }
        present
    }

    /// The loaded linker files in the kernel's order.
    pub fn files(&self) -> Vec<Arc<Loaded>> {
        with(|w| w.files.clone())
    }

    /// Ids of the loaded modules (not the kernel).
    pub fn module_ids(&self) -> Vec<i32> {
        with(|w| w.files.iter().map(|f| f.id).filter(|&i| i != 1).collect())
    }

    // ---- processes ----

    pub fn spawn(&self, is32: bool) -> Pid {
        with(|w| {
            let pid = w.next_pid;
            w.next_pid += 1;
            w.procs.insert(pid, Proc::fresh(is32));
            w.new_vm(pid);
            pid
        })
    }

    /// A new process in the struct proc of a dead one, as the kernel reuses them: the
    /// same `struct proc *` (so a stale pointer the device kept would now name this
    /// process), a fresh address space, no descriptors.
    pub fn respawn(&self, dead: Pid) -> Pid {
        with(|w| {
            let is32 = {
                let p = w.procs.get(&dead).expect("respawn of an unknown process");
                assert_eq!(p.state, PState::Dead, "respawn of a live process");
                p.is32
            };
            w.procs.insert(dead, Proc::fresh(is32));
            w.new_vm(dead);
            dead
        })
    }

    pub fn live_procs(&self) -> Vec<Pid> {
        with(|w| {
            w.procs
                .iter()
                .filter(|(_, p)| p.state == PState::Alive)
                .map(|(&pid, _)| pid)
                .collect()
        })
    }

    pub fn is_alive(&self, pid: Pid) -> bool {
        with(|w| w.procs.get(&pid).is_some_and(|p| p.state == PState::Alive))
    }

    /// fork(2): the child shares every open file and gets a copy of every mapping.
    pub fn fork(&self, pid: Pid) -> Pid {
        with(|w| {
            assert!(
                w.procs.get(&pid).is_some_and(|p| p.state == PState::Alive),
                "fork of a dead process"
            );
            let child = w.next_pid;
            w.next_pid += 1;
            let parent = &w.procs[&pid];
            let fds = parent.fds.clone();
            let maps = parent.maps.clone();
            let (is32, next_fd, layout) = (parent.is32, parent.next_fd, parent.layout);
            for fp in fds.values() {
                w.fps.get_mut(fp).unwrap().refs += 1;
            }
            for m in maps.values() {
                w.objects.get_mut(&m.obj).unwrap().refs += 1;
            }
            let gen = w.next_vm_gen;
            w.next_vm_gen += 1;
            w.procs.insert(
                child,
                Proc {
                    is32,
                    state: PState::Alive,
                    fds,
                    next_fd,
                    vm_gen: gen,
                    maps,
                    layout,
                    gone_gen: None,
                },
            );
            child
        })
    }

    /// exit(2): the process_exit event, then the descriptors, then the address space.
    pub fn exit(&self, pid: Pid) {
        with(|w| {
            let p = w.procs.get_mut(&pid).expect("exit of an unknown process");
            assert_eq!(p.state, PState::Alive, "exit of a dead process");
            p.state = PState::Exiting;
        });
        {
            let _c = enter(Some(pid), None, false);
            // SAFETY: the process_exit event handler, in the exiting process.
            unsafe { sys::ksyms_rs_proc_exit(encode(TAG_PROC, pid) as *mut sys::proc_) };
            // From here on the device must not touch this address space.
            let fds = with(|w| {
                let p = w.procs.get_mut(&pid).unwrap();
                p.gone_gen = Some(p.vm_gen);
                std::mem::take(&mut p.fds)
            });
            for fp in fds.into_values() {
                self.drop_fp(fp);
            }
        }
        with(|w| {
            w.drop_maps(pid);
            w.procs.get_mut(&pid).unwrap().state = PState::Dead;
        });
    }

    /// execve(2): the process_exec event, then a new, empty address space; the
    /// descriptors stay.
    pub fn exec(&self, pid: Pid) {
        with(|w| {
            let p = w.procs.get(&pid).expect("exec of an unknown process");
            assert_eq!(p.state, PState::Alive);
        });
        {
            let _c = enter(Some(pid), None, false);
            // SAFETY: the process_exec event handler.
            unsafe { sys::ksyms_rs_proc_exec(encode(TAG_PROC, pid) as *mut sys::proc_) };
        }
        with(|w| {
            let p = w.procs.get_mut(&pid).unwrap();
            p.gone_gen = Some(p.vm_gen);
            w.drop_maps(pid);
            w.new_vm(pid);
        });
    }

    // ---- descriptors ----

    fn fd_fp(&self, pid: Pid, fd: Fd) -> Option<u64> {
        with(|w| {
            let fp = *w.procs.get(&pid)?.fds.get(&fd)?;
            w.fps.get_mut(&fp).unwrap().refs += 1;
            Some(fp)
        })
    }

    /// Drops one reference to an open file; the last one runs the cdevpriv
    /// destructor in the current context (the closing or exiting process).
    fn drop_fp(&self, fp: u64) {
        let dtor = with(|w| {
            let f = w.fps.get_mut(&fp).unwrap();
            f.refs -= 1;
            if f.refs > 0 {
                return None;
            }
            let f = w.fps.remove(&fp).unwrap();
            f.cdevpriv.map(Dtor)
        });
        if let Some(Dtor(p)) = dtor {
            let pid = ctx().pid;
            let _c = enter(pid, Some(fp), false);
            let _d = InDtor::new();
            // SAFETY: devfs runs the destructor once, at the last reference.
            unsafe { sys::ksyms_rs_cdevpriv_dtor(p as *mut c_void) };
        }
    }

    /// open("/dev/ksyms", flags): devfs_open around d_open.
    pub fn open(&self, pid: Pid, fflags: i32) -> Result<Fd, i32> {
        let fp = with(|w| {
            assert!(
                w.procs.get(&pid).is_some_and(|p| p.state == PState::Alive),
                "open by a dead process"
            );
            let fp = w.next_fp;
            w.next_fp += 1;
            w.fps.insert(
                fp,
                FileObj {
                    refs: 1,
                    cdevpriv: None,
                    flags: fflags,
                },
            );
            fp
        });
        let r = {
            let _c = enter(Some(pid), Some(fp), true);
            // The shim passes debug.ksyms.cache as it reads it at the call.
            let cache = with(|w| c_int::from(w.cache_enabled));
            // SAFETY: d_open, with td_fpop the file being opened.
            unsafe { sys::ksyms_rs_open(fflags, cache) }
        };
        if r != 0 {
            // devfs_open: on error, devfs_clear_cdevpriv runs the destructor.
            let left = with(|w| w.fps.get_mut(&fp).unwrap().cdevpriv.take());
            if let Some(p) = left {
                report(format!("ksyms_rs_open failed ({r}) but left cdevpriv set"));
                let _c = enter(Some(pid), Some(fp), false);
                // SAFETY: devfs_clear_cdevpriv's destructor call.
                unsafe { sys::ksyms_rs_cdevpriv_dtor(p as *mut c_void) };
            }
            let _c = enter(Some(pid), None, false);
            self.drop_fp(fp);
            return Err(r);
        }
        with(|w| {
            if w.fps[&fp].cdevpriv.is_none() {
                violation(w, "ksyms_rs_open succeeded without setting cdevpriv".into());
            }
            let p = w.procs.get_mut(&pid).unwrap();
            let fd = p.next_fd;
            p.next_fd += 1;
            p.fds.insert(fd, fp);
            Ok(fd)
        })
    }

    /// close(2).
    pub fn close(&self, pid: Pid, fd: Fd) -> Result<(), i32> {
        let fp = with(|w| w.procs.get_mut(&pid).and_then(|p| p.fds.remove(&fd)));
        let Some(fp) = fp else {
            return Err(EBADF);
        };
        let _c = enter(Some(pid), None, false);
        self.drop_fp(fp);
        Ok(())
    }

    /// Passes descriptor `fd` of `from` to `to` (SCM_RIGHTS): `to`'s new descriptor.
    pub fn send_fd(&self, from: Pid, fd: Fd, to: Pid) -> Fd {
        with(|w| {
            let fp = w.procs[&from].fds[&fd];
            w.fps.get_mut(&fp).unwrap().refs += 1;
            let p = w.procs.get_mut(&to).unwrap();
            assert_eq!(p.state, PState::Alive);
            let nfd = p.next_fd;
            p.next_fd += 1;
            p.fds.insert(nfd, fp);
            nfd
        })
    }

    /// Runs `f` as a call on the open file of `pid`'s `fd` (the file held for the
    /// call, as fget does).
    fn on_file<R>(&self, pid: Pid, fd: Fd, f: impl FnOnce() -> R) -> Result<R, i32> {
        let fp = self.fd_fp(pid, fd).ok_or(EBADF)?;
        let r = {
            let _c = enter(Some(pid), Some(fp), false);
            f()
        };
        let _c = enter(Some(pid), None, false);
        self.drop_fp(fp);
        Ok(r)
    }

    /// pread(2) of `len` bytes at `offset`: the bytes moved, or the errno.
    pub fn read(&self, pid: Pid, fd: Fd, offset: i64, len: usize) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; len];
        let moved = self.read_into(pid, fd, offset, &mut buf)?;
        buf.truncate(moved);
        Ok(buf)
    }

    /// pread(2) into `buf`: the number of bytes moved, or the errno.
    pub fn read_into(&self, pid: Pid, fd: Fd, offset: i64, buf: &mut [u8]) -> Result<usize, i32> {
        let mut uio = SimUio {
            offset,
            resid: buf.len(),
            dst: buf.as_mut_ptr(),
            len: buf.len(),
        };
        let r = self.on_file(pid, fd, || {
            // SAFETY: d_read with a live uio over a live buffer, and its offset.
            unsafe { sys::ksyms_rs_read((&mut uio as *mut SimUio).cast(), offset) }
        })?;
        if r != 0 {
            return Err(r);
        }
        let moved = buf.len() - uio.resid;
        assert_eq!(
            uio.offset,
            offset + moved as i64,
            "uio offset not advanced by the bytes moved"
        );
        Ok(moved)
    }

    /// Reads the whole file from offset 0 in `chunk`-byte reads, to EOF.
    pub fn read_all(&self, pid: Pid, fd: Fd, chunk: usize) -> Result<Vec<u8>, i32> {
        let mut out = Vec::new();
        loop {
            let b = self.read(pid, fd, out.len() as i64, chunk)?;
            if b.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&b);
        }
    }

    /// ioctl(2): the IOCPARM_LEN(cmd) bytes the device wrote, or the errno. Bytes
    /// written past IOCPARM_LEN, or on failure, are violations.
    pub fn ioctl(&self, pid: Pid, fd: Fd, cmd: u64) -> Result<Vec<u8>, i32> {
        self.ioctl_arg(pid, fd, cmd, &[])
    }

    /// ioctl(2) with `arg` copied in at the start of the argument (what the caller
    /// passes to an `_IOW` command), as kern_ioctl does: FIONBIO and FIOASYNC first
    /// set or clear the file's flag from the int argument, then the driver is asked.
    pub fn ioctl_arg(&self, pid: Pid, fd: Fd, cmd: u64, arg: &[u8]) -> Result<Vec<u8>, i32> {
        if cmd == FIONBIO || cmd == FIOASYNC {
            let on = arg.len() >= 4 && i32::from_ne_bytes(arg[..4].try_into().unwrap()) != 0;
            let flag = if cmd == FIONBIO { O_NONBLOCK } else { O_ASYNC };
            self.set_file_flag(pid, fd, flag, on)?;
        }
        self.d_ioctl(pid, fd, cmd, arg)
    }

    /// The driver's d_ioctl on `pid`'s `fd` (fo_ioctl through devfs), with `arg` as
    /// the start of the kernel's copy of the argument.
    fn d_ioctl(&self, pid: Pid, fd: Fd, cmd: u64, arg: &[u8]) -> Result<Vec<u8>, i32> {
        const CANARY: u8 = 0xa5;
        let len = ((cmd >> 16) & 0x1fff) as usize;
        assert!(
            arg.len() <= len,
            "ioctl {cmd:#x}: argument longer than IOCPARM_LEN"
        );
        // The kernel's buffer: IOCPARM_LEN bytes, then a canary.
        let mut buf = vec![CANARY; len + 64];
        buf[..arg.len()].copy_from_slice(arg);
        let before = buf.clone();
        let r = self.on_file(pid, fd, || {
            // SAFETY: d_ioctl with the kernel copy of the argument, len bytes.
            unsafe { sys::ksyms_rs_ioctl(cmd as c_ulong, buf.as_mut_ptr().cast(), len) }
        })?;
        if buf[len..] != before[len..] {
            report(format!("ioctl {cmd:#x}: the device wrote past IOCPARM_LEN"));
        }
        if (r != 0 || cmd & IOC_OUT == 0) && buf != before {
            report(format!(
                "ioctl {cmd:#x}: wrote the argument, but failed ({r}) or the command has no output"
            ));
        }
        if r != 0 {
            return Err(r);
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// The open file's f_flag, as fcntl(F_GETFL) reports it (plus one: FREAD is 1).
    pub fn file_flags(&self, pid: Pid, fd: Fd) -> Result<i32, i32> {
        with(|w| {
            let fp = *w.procs.get(&pid).ok_or(EBADF)?.fds.get(&fd).ok_or(EBADF)?;
            Ok(w.fps[&fp].flags)
        })
    }

    fn set_file_flag(&self, pid: Pid, fd: Fd, flag: i32, on: bool) -> Result<(), i32> {
        with(|w| {
            let fp = *w.procs.get(&pid).ok_or(EBADF)?.fds.get(&fd).ok_or(EBADF)?;
            let f = w.fps.get_mut(&fp).unwrap();
            f.flags = if on { f.flags | flag } else { f.flags & !flag };
            Ok(())
        })
    }

    /// fcntl(F_SETFL, flags) as FreeBSD 14's kern_fcntl does it: sets O_NONBLOCK and
    /// O_ASYNC in f_flag, then sends the driver FIONBIO and FIOASYNC with the new
    /// values (every call, whatever changed); if the driver fails either, FIONBIO 0 is
    /// sent after a FIOASYNC failure, the flags are put back and the errno returned.
    pub fn fcntl_setfl(&self, pid: Pid, fd: Fd, flags: i32) -> Result<(), i32> {
        const SETTABLE: i32 = O_NONBLOCK | O_ASYNC;
        let old = self.file_flags(pid, fd)?;
        let new = (old & !SETTABLE) | (flags & SETTABLE);
        self.set_file_flag(pid, fd, SETTABLE, false)?;
        self.set_file_flag(pid, fd, new & SETTABLE, true)?;
        let int = |on: bool| i32::from(on).to_ne_bytes();
        let mut r = self.d_ioctl(pid, fd, FIONBIO, &int(new & O_NONBLOCK != 0));
        if r.is_ok() {
            r = self.d_ioctl(pid, fd, FIOASYNC, &int(new & O_ASYNC != 0));
            if r.is_err() {
                let _ = self.d_ioctl(pid, fd, FIONBIO, &int(false));
            }
        }
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                self.set_file_flag(pid, fd, SETTABLE, false)?;
                self.set_file_flag(pid, fd, old & SETTABLE, true)?;
                Err(e)
            }
        }
    }

    /// The 64-bit value of a KIOCGSIZE/KIOCGADDR (either width).
    pub fn ioctl_u64(&self, pid: Pid, fd: Fd, cmd: u64) -> Result<u64, i32> {
        let b = self.ioctl(pid, fd, cmd)?;
        Ok(match b.len() {
            4 => u64::from(u32::from_le_bytes(b[..4].try_into().unwrap())),
            8 => u64::from_le_bytes(b[..8].try_into().unwrap()),
            n => panic!("unexpected ioctl length {n}"),
        })
    }

    /// Gives back a reference to VM object `id` (vm_object_deallocate), e.g. the one
    /// [`Sim::mmap_single`] handed out when no mapping is made with it.
    pub fn object_release(&self, id: u64) {
        with(|w| w.release_obj(id, "object_release"))
    }

    /// The device's d_mmap_single alone: (offset as returned, object id). The caller
    /// owns the returned reference ([`Sim::object_release`]).
    pub fn mmap_single(
        &self,
        pid: Pid,
        fd: Fd,
        offset: u64,
        size: u64,
        prot: i32,
    ) -> Result<(u64, u64), i32> {
        let mut off = offset;
        let mut obj: *mut sys::vm_object = std::ptr::null_mut();
        let r = self.on_file(pid, fd, || {
            // SAFETY: d_mmap_single with valid out pointers.
            unsafe { sys::ksyms_rs_mmap_single(&mut off, size, &mut obj, prot) }
        })?;
        if r != 0 {
            if !obj.is_null() {
                report(format!("d_mmap_single failed ({r}) but returned an object"));
            }
            return Err(r);
        }
        let id = with(|w| w.obj(obj, "d_mmap_single result"));
        match id {
            Some(id) => Ok((off, id)),
            None => Err(EINVAL),
        }
    }

    /// mmap(2) of the device (vm_mmap_cdev): page-aligns, asks d_mmap_single, and on
    /// success maps the object it returned (the mapping owns that reference).
    pub fn mmap(&self, pid: Pid, fd: Fd, offset: u64, len: u64, prot: i32) -> Result<u64, i32> {
        if len == 0 {
            return Err(EINVAL);
        }
        let pageoff = offset & (PAGE - 1);
        let foff = offset - pageoff;
        let size = len
            .checked_add(pageoff)
            .and_then(round_page)
            .ok_or(EINVAL)?;
        let (off, obj) = self.mmap_single(pid, fd, foff, size, prot)?;
        with(|w| {
            // kern_mmap: a file mapping given no address starts past the largest
            // heap; vm_mmap_object then searches from there.
            let hint = w.procs[&pid].layout.default_addr();
            let Some(addr) = w.place(pid, hint, size) else {
                w.release_obj(obj, "mmap failure");
                return Err(ENOMEM);
            };
            if w.objects.get(&obj).is_some_and(|o| {
                off.checked_add(size)
                    .is_none_or(|e| e > o.data.len() as u64)
            }) {
                violation(
                    w,
                    format!("d_mmap_single: [{off}, +{size}) is past object {obj}"),
                );
            }
            w.objects.get_mut(&obj).unwrap().mapped = true;
            let m = Mapping {
                addr,
                len: size,
                obj,
                offset: off,
                origin: Origin::Mmap,
            };
            w.procs.get_mut(&pid).unwrap().maps.insert(addr, m);
            Ok(addr + pageoff)
        })
    }

    /// munmap(2) of exactly one mapping at `addr` of `len` (rounded) bytes.
    pub fn munmap(&self, pid: Pid, addr: u64, len: u64) -> bool {
        with(|w| {
            let len = round_page(len).unwrap_or(0);
            let p = w.procs.get_mut(&pid).unwrap();
            match p.maps.get(&addr) {
                Some(m) if m.len == len => {
                    let obj = m.obj;
                    p.maps.remove(&addr);
                    w.release_obj(obj, "munmap");
                    true
                }
                _ => false,
            }
        })
    }

    /// mmap(MAP_FIXED | MAP_ANON) of `len` bytes at `addr`, filled with `fill`.
    pub fn map_anon(&self, pid: Pid, addr: u64, len: u64, fill: u8) -> bool {
        with(|w| {
            let len = round_page(len).unwrap();
            match w.map_new_anon(pid, addr, len, len) {
                Some(obj) => {
                    w.objects.get_mut(&obj).unwrap().data.fill(fill);
                    true
                }
                None => false,
            }
        })
    }

    /// Reads `len` bytes of `pid`'s memory at `addr` (one mapping), None on a fault.
    pub fn read_mem(&self, pid: Pid, addr: u64, len: usize) -> Option<Vec<u8>> {
        with(|w| {
            let p = w.procs.get(&pid)?;
            let (_, m) = p.maps.range(..=addr).next_back()?;
            let end = addr.checked_add(len as u64)?;
            if end > m.addr + m.len {
                return None;
            }
            let start = (m.offset + (addr - m.addr)) as usize;
            let data = &w.objects.get(&m.obj)?.data;
            data.get(start..start + len).map(<[u8]>::to_vec)
        })
    }

    /// The automatic mappings (made at open) in `pid`'s address space.
    pub fn auto_mappings(&self, pid: Pid) -> Vec<Mapping> {
        let mut maps = self.mappings(pid);
        maps.retain(|m| m.origin == Origin::Auto);
        maps
    }

    pub fn mappings(&self, pid: Pid) -> Vec<Mapping> {
        with(|w| {
            w.procs
                .get(&pid)
                .map(|p| p.maps.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// The VM object id behind `pid`'s mapping at `addr`.
    pub fn mapping_at(&self, pid: Pid, addr: u64) -> Option<Mapping> {
        with(|w| w.procs.get(&pid)?.maps.get(&addr).cloned())
    }

    /// How many times object `id` was recycled for a new snapshot.
    pub fn object_recycles(&self, id: u64) -> u64 {
        with(|w| w.objects.get(&id).map_or(0, |o| o.recycled))
    }

    /// References to object `id` (0 once freed).
    pub fn object_refs(&self, id: u64) -> u64 {
        with(|w| w.objects.get(&id).map_or(0, |o| o.refs))
    }

    /// Live VM objects made through kpi_object_alloc (not the processes' anonymous
    /// memory).
    pub fn device_objects(&self) -> Vec<u64> {
        with(|w| {
            w.objects
                .iter()
                .filter(|(_, o)| !o.anon)
                .map(|(&id, _)| id)
                .collect()
        })
    }

    // ---- conveniences ----

    /// Opens, reads everything, closes: the snapshot bytes.
    pub fn snapshot(&self, pid: Pid) -> Result<Vec<u8>, i32> {
        let fd = self.open(pid, FREAD)?;
        let r = self.read_all(pid, fd, 1 << 16);
        self.close(pid, fd).unwrap();
        r
    }
}
