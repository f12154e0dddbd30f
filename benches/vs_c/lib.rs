//! The simulated kernel services of the benchmark against FreeBSD's C driver, with
//! what they cost, and the two builds that use them: ours ([`ours`], the steps of
//! `src/device.rs`'s `build_once`) and the C driver's algorithm ([`c`], ksyms_c.c).
//!
//! Both read the same linker tables (tests/sim/files.rs `SimFile`s) and write into
//! the same VM-object model ([`Kernel`]), which charges a fixed cost per service
//! call and per page visited, as uiomove_object() does with its page lookups, busy
//! and queue operations, and copies the bytes for real:
//!
//! - an object write (uiomove_object of a kernel buffer): one call, and one page
//!   visit per page it touches; a page touched for the first time is allocated and
//!   zero-filled (vm_page_grab_valid on a fresh swap object zeroes it);
//! - a new object (vm_pager_allocate): one call; recycling ours
//!   (kpi_object_recycle): one call, and one page freed per page past the new size;
//! - a run of page grabs (kpi_object_pages_grab): one call, and per page one visit,
//!   and one allocation for a page the object does not have yet, no zeroing; a run
//!   of releases: one call;
//! - a symbol value (LINKER_SYMBOL_VALUES): one indirect call, as kobj dispatches it
//!   (the modules' answers are as FreeBSD's linkers give them: load address plus
//!   table value);
//! - ours' memo of modules' values (malloc(9) with M_ZERO, free(9)): one call each,
//!   and the bytes zeroed;
//! - a read(2) (uiomove_object of the object into the reader's buffer): one call,
//!   and one page visit per page it touches;
//! - a mapping made or removed without pre-faulting (vm_map_find_min,
//!   vm_map_delete of a range with no page table entries): one call;
//! - freeing the object (the last vm_object_deallocate): one call, and one page
//!   freed per page it has.
//!
//! Each driver has its own object. Besides the builds ([`ours`], [`c`]),
//! [`ours_first_open`] and [`c_first_open`] run what the hand-over's VMs time as
//! "first open + read all after a kldload": open, read(2) of the whole file in
//! reads of 1 MiB, close. FreeBSD's driver builds into a new object, maps nothing,
//! and frees its object at every close. Ours builds, maps the snapshot without
//! pre-faulting it, and keeps the object as the cached snapshot at close; the next
//! module change makes it the spare, which calls no kernel service (the kld event
//! takes ksyms_lock only), and the next build recycles it: its pages are written
//! over, not allocated again, and none is freed. A module change ([`Kernel::reload`])
//! unloads a module and loads it again, as a new linker file at the end of the list:
//! ours takes the other modules' values from what its last build learnt and asks
//! the linker only of that one.

// Shared with the tests, which use more of it; its Rng::next is not an Iterator's.
#[allow(dead_code, clippy::should_implement_trait)]
#[path = "../../tests/sim/files.rs"]
mod files;

pub use files::{Rng, SimFile, Values};
use ksyms::device;
use ksyms::elf::{Elf64Sym, FREEBSD_AMD64};
use ksyms::kept::{Contents, Prefix};
use ksyms::snapshot::{Batched, Census, LinkerFile, PageRuns, Writer, PAGE_SIZE};
use ksyms::values::{FileKey, ValueMemo};
use ksyms::{Error, Result};
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_long, c_void};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

/// What a service costs beyond the bytes it copies, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Costs {
    /// Per kernel-service call (the call, its argument checks, a uio set up).
    pub call_ns: f64,
    /// Per page visited (lookup, busy and unbusy, dirty, page-queue update).
    pub page_ns: f64,
    /// Per page allocated in the object (vm_page_alloc).
    pub alloc_ns: f64,
    /// Per page freed with the object (vm_page_free).
    pub free_ns: f64,
}

/// Busy work of about `ns` nanoseconds.
struct Spin {
    per_ns: f64,
}

impl Spin {
    fn calibrate() -> Spin {
        let n = 20_000_000u64;
        let t = Instant::now();
        spin(n);
        Spin {
            per_ns: n as f64 / (t.elapsed().as_nanos() as f64).max(1.0),
        }
    }
    fn cost(&self, ns: f64) {
        spin((ns * self.per_ns) as u64);
    }
}

#[inline(never)]
fn spin(iters: u64) {
    let mut x = 0u64;
    for i in 0..iters {
        x = black_box(x.wrapping_add(i));
    }
    black_box(x);
}

/// Kernel-service calls of one build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub walks: u64,
    /// Objects made, and ours recycled.
    pub objects: u64,
    pub recycles: u64,
    pub symbol_values: u64,
    /// uiomove_object writes.
    pub object_writes: u64,
    /// Pages grabbed for writing in place, and the calls that gave them back.
    pub grab_calls: u64,
    pub page_grabs: u64,
    pub page_releases: u64,
    /// Page visits of object writes, grabs and reads, and the pages they allocated.
    pub page_visits: u64,
    pub pages_allocated: u64,
    /// Bytes copied into a staging buffer.
    pub staged: u64,
    /// Bytes copied into the object.
    pub copied: u64,
    /// Bytes zero-filled in new pages.
    pub zeroed: u64,
    /// read(2) calls, and the bytes they copied out.
    pub reads: u64,
    pub read_bytes: u64,
    /// Automatic mappings made and removed.
    pub maps: u64,
    pub unmaps: u64,
    /// Pages freed with the object.
    pub pages_freed: u64,
}

/// A linker file as the kernel linker hands it out during a walk.
pub struct File {
    sim: SimFile,
    id: c_int,
    kernel: *const Kernel,
}

/// A VM object of the model.
#[derive(Default)]
struct Object {
    /// Its pages (reused from object to object, like pages from the free list: a
    /// new page holds whatever it held before), and which of them exist.
    data: RefCell<Vec<u8>>,
    created: RefCell<Vec<bool>>,
    /// The size of the snapshot in it.
    size: Cell<u64>,
}

/// The linker files, and each driver's VM object.
pub struct Kernel {
    /// Boxed: a file stays where it is until unloaded, as a kernel linker file
    /// (its address is part of its identity for ours' memo).
    #[allow(clippy::vec_box)]
    files: RefCell<Vec<Box<File>>>,
    next_id: Cell<c_int>,
    /// What our last build learnt of modules' values (src/device.rs keeps it).
    memo: RefCell<Option<Box<ValueMemo>>>,
    /// What ours' cached snapshot holds, file by file (src/device.rs keeps it
    /// with the snapshot, and the spare).
    contents: RefCell<Option<Box<Contents>>>,
    /// A module not loaded, for [`Kernel::toggle`].
    extra: RefCell<Option<SimFile>>,
    costs: Costs,
    spin: Spin,
    counts: Cell<Counts>,
    ours: Object,
    c: Object,
    /// The reading process's buffer.
    user: RefCell<Vec<u8>>,
}

impl Kernel {
    /// The kernel with `files` loaded, and `extra`, a module [`Kernel::toggle`]
    /// loads and unloads.
    pub fn new(files: Vec<SimFile>, extra: SimFile, costs: Costs) -> Box<Kernel> {
        let mut k = Box::new(Kernel {
            files: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
            memo: RefCell::new(None),
            contents: RefCell::new(None),
            extra: RefCell::new(Some(extra)),
            costs,
            spin: Spin::calibrate(),
            counts: Cell::new(Counts::default()),
            ours: Object::default(),
            c: Object::default(),
            user: RefCell::new(vec![0; READ_SIZE]),
        });
        let me: *const Kernel = &*k;
        for sim in files {
            let file = k.new_file(sim, me);
            k.files.get_mut().push(file);
        }
        k
    }

    fn new_file(&self, sim: SimFile, kernel: *const Kernel) -> Box<File> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        Box::new(File { sim, id, kernel })
    }

    /// A module change: kldunload of module `1 + n % modules`, then kldload of the
    /// same file again (a new linker file, with a new id, at the end of the list).
    /// Calls no service of either driver (ours' kld event only takes its lock).
    pub fn reload(&self, n: usize) {
        let mut files = self.files.borrow_mut();
        let modules = files.len().saturating_sub(1);
        if modules == 0 {
            return;
        }
        let old = files.remove(1 + n % modules);
        let me: *const Kernel = self;
        files.push(self.new_file(old.sim, me));
    }

    /// A module change: kldload of `extra` (appended, with a new id) when it is
    /// not loaded, else its kldunload (it is the last file then). Returns whether
    /// it is loaded now.
    pub fn toggle(&self) -> bool {
        let mut files = self.files.borrow_mut();
        let mut extra = self.extra.borrow_mut();
        match extra.take() {
            Some(sim) => {
                let me: *const Kernel = self;
                files.push(self.new_file(sim, me));
                true
            }
            None => {
                if let Some(last) = files.pop() {
                    *extra = Some(last.sim);
                }
                false
            }
        }
    }

    pub fn take_counts(&self) -> Counts {
        self.counts.take()
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }

    /// linker_file_foreach.
    fn foreach(&self, f: impl FnMut(&File) -> Result<()>) -> Result<()> {
        self.count(|c| c.walks += 1);
        self.files.borrow().iter().map(|f| &**f).try_for_each(f)
    }

    /// vm_pager_allocate: a fresh object of `room` bytes (at least `size`), no page
    /// in it yet, for a snapshot of `size` bytes.
    fn object_alloc(&self, o: &Object, size: u64, room: u64) {
        self.spin.cost(self.costs.call_ns);
        self.count(|c| c.objects += 1);
        let len = (room.max(size) as usize).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let mut data = o.data.borrow_mut();
        if data.len() < len {
            data.resize(len, 0xa5);
        }
        let mut created = o.created.borrow_mut();
        created.clear();
        created.resize(len / PAGE_SIZE, false);
        o.size.set(size);
    }

    /// kpi_object_recycle: the object for a snapshot of `size` bytes, its pages past
    /// that freed, if it has room (it has no other user here); whether it had.
    fn object_recycle(&self, o: &Object, size: u64) -> bool {
        self.spin.cost(self.costs.call_ns);
        let keep = (size as usize).div_ceil(PAGE_SIZE);
        let mut created = o.created.borrow_mut();
        if keep > created.len() {
            return false;
        }
        let freed = created[keep..].iter().filter(|&&p| p).count();
        created[keep..].fill(false);
        for _ in 0..freed {
            self.spin.cost(self.costs.free_ns);
        }
        self.count(|c| {
            c.pages_freed += freed as u64;
            c.recycles += 1;
        });
        o.size.set(size);
        true
    }

    /// Allocates page `index` if it does not exist; whether it was new.
    fn visit(&self, o: &Object, index: usize) -> bool {
        self.spin.cost(self.costs.page_ns);
        self.count(|c| c.page_visits += 1);
        let mut created = o.created.borrow_mut();
        let new = !created[index];
        if new {
            created[index] = true;
            self.spin.cost(self.costs.alloc_ns);
            self.count(|c| c.pages_allocated += 1);
        }
        new
    }

    /// A read(2) of up to [`READ_SIZE`] bytes at `off`: uiomove_object of the
    /// object's pages (all there: the build made them) into the reader's buffer.
    /// The bytes read.
    fn read(&self, o: &Object, off: u64) -> usize {
        self.spin.cost(self.costs.call_ns);
        let size = o.size.get() as usize;
        let (start, data) = ((off as usize).min(size), o.data.borrow());
        let end = size.min(start + READ_SIZE);
        let mut user = self.user.borrow_mut();
        let mut at = start;
        while at < end {
            let page = at / PAGE_SIZE * PAGE_SIZE;
            self.spin.cost(self.costs.page_ns);
            self.count(|c| c.page_visits += 1);
            let n = (page + PAGE_SIZE).min(end) - at;
            user[at - start..at - start + n].copy_from_slice(&data[at..at + n]);
            at += n;
        }
        black_box(&mut user[..]);
        self.count(|c| {
            c.reads += 1;
            c.read_bytes += (end - start) as u64;
        });
        end - start
    }

    /// The whole file, read by 1 MiB reads up to the one that returns 0 (EOF).
    fn read_all(&self, o: &Object) {
        let mut off = 0;
        loop {
            let n = self.read(o, off);
            if n == 0 {
                break;
            }
            off += n as u64;
        }
    }

    /// A mapping made or removed without touching the pmap.
    fn map_call(&self, make: bool) {
        self.spin.cost(self.costs.call_ns);
        self.count(|c| if make { c.maps += 1 } else { c.unmaps += 1 });
    }

    /// The last reference to the object goes: its pages are freed.
    fn object_free(&self, o: &Object) {
        self.spin.cost(self.costs.call_ns);
        let pages = o.created.borrow().iter().filter(|&&p| p).count();
        for _ in 0..pages {
            self.spin.cost(self.costs.free_ns);
        }
        self.count(|c| c.pages_freed += pages as u64);
    }

    /// uiomove_object of `buf` into the C driver's object at `off`.
    fn object_write(&self, buf: &[u8], off: u64) -> Result<()> {
        self.spin.cost(self.costs.call_ns);
        let o = &self.c;
        let (off, size) = (off as usize, o.size.get() as usize);
        if off > size || buf.len() > size - off {
            return Err(Error::Invalid);
        }
        self.count(|c| {
            c.object_writes += 1;
            c.copied += buf.len() as u64;
        });
        let mut at = off;
        let mut rest = buf;
        while !rest.is_empty() {
            let index = at / PAGE_SIZE;
            let page = index * PAGE_SIZE;
            if self.visit(o, index) {
                black_box(&mut o.data.borrow_mut()[page..page + PAGE_SIZE]).fill(0);
                self.count(|c| c.zeroed += PAGE_SIZE as u64);
            }
            let n = rest.len().min(page + PAGE_SIZE - at);
            o.data.borrow_mut()[at..at + n].copy_from_slice(&rest[..n]);
            at += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// The reads of the timed open: 1 MiB, as the hand-over's measurement reads.
pub const READ_SIZE: usize = 1 << 20;

/// Our pages on the model: kpi_object_pages_grab / kpi_object_pages_release, used
/// through the engine's `Batched` sink as src/device.rs uses them.
struct ObjectPages<'k> {
    kernel: &'k Kernel,
    data: *mut u8,
    /// The pages written in this build (the shim hands out the others, whether
    /// the object has them already or not).
    written: Vec<bool>,
}

// SAFETY: each page handed out is PAGE_SIZE bytes of our object's buffer, borrowed
// for the build (ours() holds the RefCell borrow), and given out once.
unsafe impl PageRuns for ObjectPages<'_> {
    type Handle = usize;

    fn page_size(&self) -> usize {
        PAGE_SIZE
    }

    fn grab(&mut self, first: u64, out: &mut [(usize, NonNull<u8>)]) -> Result<usize> {
        let k = self.kernel;
        k.spin.cost(k.costs.call_ns);
        k.count(|c| c.grab_calls += 1);
        let pages = self.written.len();
        let mut n = 0;
        for (slot, index) in out.iter_mut().zip(first as usize..pages) {
            if std::mem::replace(&mut self.written[index], true) {
                // Batched never asks twice (the simulator checks it).
                break;
            }
            k.visit(&k.ours, index);
            // SAFETY: index < pages, inside the object's buffer.
            let va = unsafe { self.data.add(index * PAGE_SIZE) };
            *slot = (index, NonNull::new(va).ok_or(Error::Invalid)?);
            n += 1;
        }
        k.count(|c| c.page_grabs += n as u64);
        if n == 0 {
            Err(Error::Invalid)
        } else {
            Ok(n)
        }
    }

    unsafe fn release(&mut self, pages: &[usize], complete: bool) {
        let k = self.kernel;
        k.spin.cost(k.costs.call_ns);
        k.count(|c| c.page_releases += 1);
        if complete {
            k.count(|c| c.copied += (pages.len() * PAGE_SIZE) as u64);
        }
    }
}

/// The indirect call both builds make for a module's symbol value, counted.
type SymbolValues = unsafe extern "C" fn(*mut c_void, *const Elf64Sym, *mut u64) -> c_int;

/// LINKER_SYMBOL_VALUES: the address the linker reports for `sym`, a symbol of
/// `lf`'s table.
unsafe extern "C" fn symbol_values(
    lf: *mut c_void,
    sym: *const Elf64Sym,
    value: *mut u64,
) -> c_int {
    // SAFETY: both builds pass a File of the walk and a symbol of its table.
    let file = unsafe { &*lf.cast::<File>() };
    // SAFETY: the file's kernel outlives its files.
    unsafe { &*file.kernel }.count(|c| c.symbol_values += 1);
    let base = file.sim.syms.as_ptr() as usize;
    let index = (sym as usize - base) / std::mem::size_of::<Elf64Sym>();
    match file.sim.resolve(index) {
        Some(v) => {
            // SAFETY: a valid out pointer from the caller.
            unsafe { value.write(v) };
            0
        }
        None => 2,
    }
}

/// The resolver as a function pointer that the optimizer cannot see through.
fn resolver() -> SymbolValues {
    black_box(symbol_values as SymbolValues)
}

/// Our engine's view of a file during the walk (as src/kpi.rs's KernelFile).
struct View<'f> {
    file: &'f File,
    resolve: SymbolValues,
}

impl LinkerFile for View<'_> {
    fn is_kernel(&self) -> bool {
        self.file.id == 1
    }
    fn symbols(&self) -> Result<&[Elf64Sym]> {
        Ok(&self.file.sim.syms)
    }
    fn strings(&self) -> Result<&[u8]> {
        Ok(&self.file.sim.strs)
    }
    fn symbol_value(&self, index: usize, _sym: &Elf64Sym) -> Option<u64> {
        let sym = self.file.sim.syms.get(index)?;
        let mut value = 0;
        let lf = (self.file as *const File).cast_mut().cast();
        // SAFETY: a file of the walk, a symbol of its table, a valid out pointer.
        (unsafe { (self.resolve)(lf, sym, &mut value) } == 0).then_some(value)
    }
    fn key(&self) -> Option<FileKey> {
        let sim = &self.file.sim;
        Some(FileKey {
            file: self.file as *const File as u64,
            load: self.file.id as u64,
            symbols: sim.syms.as_ptr() as u64,
            symbol_count: sim.syms.len() as u64,
            strings: sim.strs.as_ptr() as u64,
            string_bytes: sim.strs.len() as u64,
        })
    }
}

/// Our build, step for step as src/device.rs's `build` and `build_once`: the census
/// walk (ordered on the first attempt), the object (ours recycled if it has room,
/// else a new one with room), the writing walk straight into its pages. Returns the
/// snapshot's size.
pub fn ours(k: &Kernel) -> Result<u64> {
    let resolve = resolver();
    let o = &k.ours;
    let memo = k.memo.borrow_mut().take();
    let held = k.contents.borrow_mut().take();
    // malloc(9) of the memo and the list this build fills, zeroed.
    k.spin.cost(2.0 * k.costs.call_ns);
    // SAFETY: both are plain data (Pod), of which all zeroes is valid: empty.
    let (mut learnt, mut listing) = unsafe {
        (
            Box::<ValueMemo>::new_zeroed().assume_init(),
            Box::<Contents>::new_zeroed().assume_init(),
        )
    };
    k.count(|c| c.zeroed += (size_of::<ValueMemo>() + size_of::<Contents>()) as u64);
    for attempt in 0..3 {
        let mut census = Census::default();
        // What the stale snapshot holds is only there for the first attempt.
        let held = held.as_deref().filter(|_| attempt == 0);
        let mut prefix = Prefix::new(held);
        k.foreach(|f| {
            let view = View { file: f, resolve };
            prefix.track(&view);
            if attempt > 0 {
                census.add(&view)
            } else {
                census.add_ordered(&view)
            }
        })?;
        let layout = census.layout()?;
        let size = layout.size();
        let mut same = 0;
        if o.created.borrow().is_empty() || !k.object_recycle(o, size) {
            if !o.created.borrow().is_empty() {
                k.object_free(o);
            }
            k.object_alloc(o, size, device::object_size(size));
        } else {
            same = prefix.same();
        }
        let written = vec![false; o.created.borrow().len()];
        let mut data = o.data.borrow_mut();
        let mut pages = ObjectPages {
            kernel: k,
            data: data.as_mut_ptr(),
            written,
        };
        let mut sink = Batched::new(&mut pages, layout.size());
        let mut writer = Writer::new(layout, &FREEBSD_AMD64, &mut sink)?
            .remember(memo.as_deref(), Some(&mut learnt))
            .keep(held.filter(|_| same > 0), same, Some(&mut listing));
        k.foreach(|f| writer.add(&View { file: f, resolve }))?;
        let done = writer.finish();
        drop(sink);
        match done {
            Err(Error::Changed) => continue,
            r => {
                // free(9) of the memo and the list replaced.
                k.spin.cost(2.0 * k.costs.call_ns);
                *k.memo.borrow_mut() = Some(learnt);
                *k.contents.borrow_mut() = Some(listing);
                return r.map(|l| l.size());
            }
        }
    }
    Err(Error::Changed)
}

/// Our first open after a module change: the build, the automatic mapping (no
/// pre-fault), the whole file read, the close (the mapping removed; the object stays
/// as the cached snapshot). Returns the snapshot's size.
pub fn ours_first_open(k: &Kernel) -> Result<u64> {
    let size = ours(k)?;
    k.map_call(true);
    k.read_all(&k.ours);
    k.map_call(false);
    Ok(size)
}

// ---------------------------------------------------------------------------
// The C driver's algorithm (ksyms_c.c) on the same services
// ---------------------------------------------------------------------------

#[repr(C)]
struct Services {
    ctx: *const c_void,
    foreach: unsafe extern "C" fn(
        *const c_void,
        unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
        *mut c_void,
    ) -> c_int,
    symtab_get: unsafe extern "C" fn(*mut c_void, *mut *const Elf64Sym) -> c_long,
    strtab_get: unsafe extern "C" fn(*mut c_void, *mut *const c_char) -> c_long,
    lf_id: unsafe extern "C" fn(*mut c_void) -> c_int,
    symbol_values: SymbolValues,
    object_alloc: unsafe extern "C" fn(*const c_void, u64) -> c_int,
    object_write: unsafe extern "C" fn(*const c_void, *const c_void, u64, usize) -> c_int,
    staged: u64,
}

extern "C" {
    fn kb_c_build(k: *mut Services, size: *mut u64) -> c_int;
}

unsafe extern "C" fn c_foreach(
    k: *const c_void,
    cb: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: the kernel passed in Services, alive for the build.
    let k = unsafe { &*k.cast::<Kernel>() };
    let mut ret = 0;
    let _ = k.foreach(|f| {
        // SAFETY: the C driver's callback, with its own argument.
        ret = unsafe { cb((f as *const File).cast_mut().cast(), arg) };
        if ret == 0 {
            Ok(())
        } else {
            Err(Error::Invalid)
        }
    });
    ret
}

unsafe extern "C" fn c_symtab_get(lf: *mut c_void, symtab: *mut *const Elf64Sym) -> c_long {
    // SAFETY: a File of the walk; a valid out pointer.
    let f = unsafe { &*lf.cast::<File>() };
    // SAFETY: as above.
    unsafe { symtab.write(f.sim.syms.as_ptr()) };
    f.sim.syms.len() as c_long
}

unsafe extern "C" fn c_strtab_get(lf: *mut c_void, strtab: *mut *const c_char) -> c_long {
    // SAFETY: a File of the walk; a valid out pointer.
    let f = unsafe { &*lf.cast::<File>() };
    // SAFETY: as above.
    unsafe { strtab.write(f.sim.strs.as_ptr().cast()) };
    f.sim.strs.len() as c_long
}

unsafe extern "C" fn c_lf_id(lf: *mut c_void) -> c_int {
    // SAFETY: a File of the walk.
    unsafe { &*lf.cast::<File>() }.id
}

unsafe extern "C" fn c_object_alloc(k: *const c_void, size: u64) -> c_int {
    // SAFETY: the kernel of Services.
    let k = unsafe { &*k.cast::<Kernel>() };
    k.object_alloc(&k.c, size, size);
    0
}

unsafe extern "C" fn c_object_write(
    k: *const c_void,
    buf: *const c_void,
    off: u64,
    len: usize,
) -> c_int {
    // SAFETY: the kernel of Services; the driver's buffer of len bytes.
    let (k, buf) = unsafe {
        (
            &*k.cast::<Kernel>(),
            std::slice::from_raw_parts(buf.cast::<u8>(), len),
        )
    };
    match k.object_write(buf, off) {
        Ok(()) => 0,
        Err(_) => 22,
    }
}

/// The C driver's open: its build, the whole file read, the close (the object
/// freed). Returns the snapshot's size.
pub fn c_first_open(k: &Kernel) -> Result<u64> {
    let size = c(k)?;
    k.read_all(&k.c);
    k.object_free(&k.c);
    Ok(size)
}

/// The C driver's build: the snapshot's size.
pub fn c(k: &Kernel) -> Result<u64> {
    let mut services = Services {
        ctx: (k as *const Kernel).cast(),
        foreach: c_foreach,
        symtab_get: c_symtab_get,
        strtab_get: c_strtab_get,
        lf_id: c_lf_id,
        symbol_values: resolver(),
        object_alloc: c_object_alloc,
        object_write: c_object_write,
        staged: 0,
    };
    let mut size = 0;
    // SAFETY: services and size are valid for the call; every callback matches
    // the C declaration of struct kb_services.
    let r = unsafe { kb_c_build(&mut services, &mut size) };
    k.count(|c| c.staged += services.staged);
    if r == 0 {
        Ok(size)
    } else {
        Err(Error::Kernel(r))
    }
}
