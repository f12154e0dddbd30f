//! Safe wrappers over the kernel services the shim exports (`kmod/ksyms_kpi.h`).
//!
//! Each wrapper states the contract it relies on and checks what the shim only
//! asserts; nothing here decides anything: the decisions are in `device.rs` and
//! `placement.rs`.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::elf::{Elf64Sym, Pod};
use crate::error::{Error, Result};
use crate::placement::{self, VmLayout};
use crate::probe;
use crate::snapshot::LinkerFile;
use crate::values::FileKey;

/// The declarations bindgen generated from `kmod/ksyms_kpi.h` (`make bindings`).
#[allow(non_camel_case_types, non_upper_case_globals, dead_code, clippy::all)]
pub mod sys {
    include!("../bindings/kpi.rs");
}

/// A kernel-malloc'ed box: `malloc(9)` under `M_KSYMS`, freed on drop.
pub struct KBox<T>(NonNull<T>);

impl<T> KBox<T> {
    /// Moves `value` into kernel memory; [`Error::NoMemory`] when none is left.
    pub fn try_new(value: T) -> Result<Self> {
        // malloc(9) aligns every allocation to at least the pointer size.
        const { assert!(core::mem::align_of::<T>() <= core::mem::align_of::<usize>()) };
        // SAFETY: kpi_malloc has no preconditions; it returns NULL or a zeroed block
        // of the requested size, aligned for any type of pointer alignment.
        let raw = unsafe { sys::kpi_malloc(core::mem::size_of::<T>()) }.cast::<T>();
        let ptr = NonNull::new(raw).ok_or(Error::NoMemory)?;
        // SAFETY: the block is fresh, large enough and aligned for T (asserted above).
        unsafe { ptr.as_ptr().write(value) };
        Ok(KBox(ptr))
    }

    /// A zero-filled `T` in kernel memory, built in place (no copy through the
    /// stack, which is small in the kernel).
    pub fn try_zeroed() -> Result<Self>
    where
        T: Pod,
    {
        const { assert!(core::mem::align_of::<T>() <= core::mem::align_of::<usize>()) };
        // SAFETY: as in try_new; kpi_malloc zero-fills the block (M_ZERO).
        let raw = unsafe { sys::kpi_malloc(core::mem::size_of::<T>()) }.cast::<T>();
        // All-zero bytes are a valid T (Pod).
        NonNull::new(raw).map(KBox).ok_or(Error::NoMemory)
    }

    /// Gives up ownership; [`KBox::from_raw`] takes it back.
    pub fn into_raw(this: Self) -> NonNull<T> {
        let ptr = this.0;
        core::mem::forget(this);
        ptr
    }

    /// # Safety
    /// `ptr` came from [`KBox::into_raw`] and is not owned by anything else.
    pub unsafe fn from_raw(ptr: NonNull<T>) -> Self {
        KBox(ptr)
    }
}

impl<T> Deref for KBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns a live, initialised T.
        unsafe { self.0.as_ref() }
    }
}

impl<T> DerefMut for KBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the box owns a live, initialised T, and &mut self is unique.
        unsafe { self.0.as_mut() }
    }
}

impl<T> Drop for KBox<T> {
    fn drop(&mut self) {
        // SAFETY: the box owns the T and the block; neither is used after this.
        unsafe {
            self.0.as_ptr().drop_in_place();
            sys::kpi_free(self.0.as_ptr().cast());
        }
    }
}

/// Data guarded by ksyms_lock, the shim's one sx lock.
///
/// Every instance would lock that same sx lock, so there is exactly one: the device's
/// state. [`Locked::new`] is unsafe and crate-private to say so, and it makes a
/// [`Guard`] of any `Locked` the proof that the current thread holds ksyms_lock,
/// which [`LockedBy`] relies on.
pub(crate) struct Locked<T>(UnsafeCell<T>);

// SAFETY: every access to the inner value goes through `lock`, which holds the
// kernel lock for the guard's whole life, so at most one thread touches it.
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    /// # Safety
    /// No other `Locked` exists in the program. A second one would take the same
    /// ksyms_lock, so a thread locking both would recurse on it (the shim panics),
    /// and [`LockedBy`] relies on a guard standing for the one lock.
    pub(crate) const unsafe fn new(value: T) -> Self {
        Locked(UnsafeCell::new(value))
    }

    /// Takes ksyms_lock. Never call a linker walk with the guard alive (lock order:
    /// the kernel linker's lock comes first).
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        // SAFETY: kpi_lock has no preconditions; it may sleep.
        unsafe { sys::kpi_lock() };
        Guard {
            cell: &self.0,
            _not_send: PhantomData,
        }
    }
}

/// Data guarded by ksyms_lock but kept outside the [`Locked`] value: in each open
/// file, while the state behind the lock links the open files (Rust-for-Linux's
/// `LockedBy`, for a lock of which there is one). It is opened with the lock's
/// guard, borrowed mutably for as long as the reference lives.
pub(crate) struct LockedBy<T>(UnsafeCell<T>);

impl<T> LockedBy<T> {
    pub(crate) const fn new(value: T) -> Self {
        LockedBy(UnsafeCell::new(value))
    }

    /// The contents, for as long as `guard` is lent.
    pub(crate) fn access_mut<'a, S>(&'a self, _guard: &'a mut Guard<'_, S>) -> &'a mut T {
        // SAFETY: a Guard exists only while its thread holds ksyms_lock (there is one
        // Locked, and so one lock), so no other thread is in here; this thread has
        // one guard (the shim panics on recursion), mutably borrowed for 'a, and every
        // access to the cell goes through this function, so no other reference to the
        // contents exists during 'a.
        unsafe { &mut *self.0.get() }
    }
}

/// Holds ksyms_lock; releases it on drop.
pub(crate) struct Guard<'a, T> {
    cell: &'a UnsafeCell<T>,
    // An sx lock is released by the thread that took it.
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held, so no other thread has access.
        unsafe { &*self.cell.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held and &mut self is the only guard.
        unsafe { &mut *self.cell.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard took the lock in Locked::lock.
        unsafe { sys::kpi_unlock() };
    }
}

/// The largest VM object: `OFF_MAX` less a page, so that its size rounds up to
/// pages within an `off_t`.
pub const OBJECT_MAX: u64 = {
    assert!(sys::KPI_OBJECT_MAX > 0);
    sys::KPI_OBJECT_MAX as u64
};

/// One reference to a VM object; released on drop.
#[derive(Debug)]
pub struct VmObject(NonNull<sys::vm_object>);

// SAFETY: a VM object reference may be used and released from any thread.
unsafe impl Send for VmObject {}

// SAFETY: `&VmObject` only lets threads take references, read, write and map the
// object through the kernel's VM services, which lock the object or busy its pages
// themselves (vm_object_reference, vm_page_grab_valid_unlocked, vm_map_find_min),
// so several threads may use one reference at once (e.g. the calls on an open file
// sharing its snapshot).
unsafe impl Sync for VmObject {}

impl VmObject {
    /// A pageable anonymous object of `size` bytes (rounded up to pages);
    /// [`Error::TooLarge`] past [`OBJECT_MAX`].
    pub fn alloc(size: u64) -> Result<Self> {
        if size > OBJECT_MAX {
            return Err(Error::TooLarge);
        }
        // SAFETY: size is within KPI_OBJECT_MAX (checked); returns NULL or an object
        // with one reference.
        let obj = unsafe { sys::kpi_object_alloc(size) };
        NonNull::new(obj).map(VmObject).ok_or(Error::NoMemory)
    }

    /// Takes this object, kept from an older snapshot, for a new snapshot of
    /// `size` bytes: only when this is its one reference and it has room for `size`
    /// (else an error, and the object is untouched). Its pages keep their old bytes
    /// until [`VmObject::grab_pages`] hands them out to be written whole.
    pub fn recycle(&self, size: u64) -> Result<()> {
        if size > OBJECT_MAX {
            return Err(Error::TooLarge);
        }
        // SAFETY: the object is alive (we hold a reference); size is within
        // KPI_OBJECT_MAX (checked).
        Error::check(unsafe { sys::kpi_object_recycle(self.0.as_ptr(), size) })
    }

    /// Another reference to the same object.
    pub fn reference(&self) -> VmObject {
        // SAFETY: self holds a reference, so the object is alive.
        unsafe { sys::kpi_object_ref(self.0.as_ptr()) };
        VmObject(self.0)
    }

    /// Gives the reference to the caller of an entry point (e.g. `d_mmap_single`).
    pub fn into_raw(self) -> *mut sys::vm_object {
        let ptr = self.0.as_ptr();
        core::mem::forget(self);
        ptr
    }

    pub fn as_ptr(&self) -> *mut sys::vm_object {
        self.0.as_ptr()
    }

    /// Copies from the object to the caller's buffers described by `uio`;
    /// [`Error::Invalid`] for a negative offset or a `size` past [`OBJECT_MAX`].
    pub fn read(&self, size: u64, uio: &Uio) -> Result<()> {
        if size > OBJECT_MAX || uio.offset() < 0 {
            return Err(Error::Invalid);
        }
        // SAFETY: the object is alive; uio is the live uio of the current read call;
        // its offset is not negative and size within KPI_OBJECT_MAX (checked).
        Error::check(unsafe { sys::kpi_object_read(self.0.as_ptr(), size, uio.uio.as_ptr()) })
    }
}

/// Writing a new object in place: its pages, grabbed and given back in runs.
impl VmObject {
    /// Pages `first..` of the object (at most `out.len()`), for writing through the
    /// kernel's direct map: how many were grabbed (at least 1). [`Error::Invalid`]
    /// when `first` is past the object. Only while this is the object's one
    /// reference, and never for a page written since it was allocated or recycled.
    pub fn grab_pages(&self, first: u64, out: &mut [(PageHandle, NonNull<u8>)]) -> Result<usize> {
        const RUN: usize = crate::snapshot::BATCH;
        let mut m = [core::ptr::null_mut::<sys::vm_page>(); RUN];
        let mut va = [core::ptr::null_mut::<c_void>(); RUN];
        let count = out.len().min(RUN);
        let count32 = i32::try_from(count)
            .ok()
            .filter(|&c| c > 0)
            .ok_or(Error::Invalid)?;
        // SAFETY: the object is alive (we hold a reference); m and va have room
        // for count entries, and count is not 0 (checked), as the shim asserts.
        let n = unsafe {
            sys::kpi_object_pages_grab(
                self.0.as_ptr(),
                first,
                count32,
                m.as_mut_ptr(),
                va.as_mut_ptr(),
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(count);
        let mut got = 0usize;
        for ((dst, &page), &addr) in out.iter_mut().zip(&m).zip(&va).take(n) {
            match (NonNull::new(page), NonNull::new(addr.cast::<u8>())) {
                (Some(page), Some(addr)) => {
                    *dst = (PageHandle(page.as_ptr()), addr);
                    got = got.saturating_add(1);
                }
                _ => break,
            }
        }
        if got < n {
            // Not what the shim promises; give everything back unwritten.
            let n32 = i32::try_from(n).unwrap_or(0);
            // SAFETY: the n pages were just grabbed and are given back once.
            unsafe { sys::kpi_object_pages_release(m.as_ptr(), n32, 0) };
            return Err(Error::Invalid);
        }
        if got == 0 {
            return Err(Error::Invalid);
        }
        Ok(got)
    }

    /// Gives pages back: valid and dirty when `written` (every byte of each was),
    /// else invalid.
    ///
    /// # Safety
    /// Each page came from [`VmObject::grab_pages`] and is given back once.
    pub unsafe fn release_pages(pages: &[PageHandle], written: bool) {
        let Some(count) = i32::try_from(pages.len()).ok().filter(|&c| c > 0) else {
            return;
        };
        // SAFETY: PageHandle is a transparent *mut vm_page, so the slice is an
        // array of count page pointers, count not 0 (checked; the shim asserts
        // it); each grabbed and given back once (contract).
        unsafe {
            sys::kpi_object_pages_release(
                pages.as_ptr().cast::<*mut sys::vm_page>(),
                count,
                i32::from(written),
            )
        };
    }
}

/// A page of a [`VmObject`] held for writing (busied and wired), as the kernel
/// identifies it; null only as a placeholder.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct PageHandle(*mut sys::vm_page);

impl Default for PageHandle {
    fn default() -> Self {
        PageHandle(core::ptr::null_mut())
    }
}

impl Drop for VmObject {
    fn drop(&mut self) {
        // SAFETY: we own one reference, given back exactly once here.
        unsafe { sys::kpi_object_release(self.0.as_ptr()) };
    }
}

/// The `struct uio` of a read call.
pub struct Uio {
    uio: NonNull<sys::uio>,
    offset: i64,
}

impl Uio {
    /// # Safety
    /// `uio` is the live uio the kernel passed to the current `d_read` call, and
    /// `offset` its `uio_offset`.
    pub unsafe fn from_raw(uio: *mut sys::uio, offset: i64) -> Option<Self> {
        NonNull::new(uio).map(|uio| Uio { uio, offset })
    }

    /// Where the read starts.
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

/// A process, as an identity: compared, never dereferenced by Rust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc(NonNull<sys::proc_>);

// SAFETY: a process pointer is only an identity here; the kernel object it names is
// used through the shim, under the rules documented in ksyms_kpi.h.
unsafe impl Send for Proc {}

impl Proc {
    /// The process of the calling thread.
    pub fn current() -> Result<Proc> {
        // SAFETY: no preconditions.
        let p = unsafe { sys::kpi_curproc() };
        NonNull::new(p).map(Proc).ok_or(Error::Invalid)
    }

    pub fn from_raw(p: *mut sys::proc_) -> Option<Proc> {
        NonNull::new(p).map(Proc)
    }

    /// Maps `size` bytes of `object` read-only into the calling process, where
    /// [`placement::place`] finds room.
    pub fn map_current(object: &VmObject, size: u64) -> Result<u64> {
        placement::place(&vm_layout(), size, |hint, len| {
            let mut addr = 0u64;
            // SAFETY: the object is alive; len and hint are non-zero multiples of
            // the page size (placement's contract); addr is a valid out pointer.
            let result =
                Error::check(unsafe { sys::kpi_map_object(object.as_ptr(), len, hint, &mut addr) })
                    .map(|()| addr);
            probe::map(hint, len, result);
            result
        })
    }

    /// Removes our mapping of `object` at `addr` from this process, if it is still
    /// there.
    ///
    /// # Safety
    /// The process is alive and has the address space the mapping was made in: the
    /// caller holds ksyms_lock and has not seen its exit or exec event (those events
    /// wait for the lock, and make the device forget the process as an opener).
    pub unsafe fn unmap(self, addr: u64, size: u64, object: &VmObject) {
        // The length the mapping was made with; a range that cannot have been
        // mapped is not ours to remove.
        let Some(len) = placement::map_len(size)
            .ok()
            .filter(|&len| addr.checked_add(len).is_some())
        else {
            return;
        };
        // SAFETY: the process is alive (contract); the object is alive (we hold a
        // reference); len is a non-zero multiple of the page size and addr + len
        // does not wrap (checked).
        unsafe { sys::kpi_unmap_object(self.0.as_ptr(), addr, len, object.as_ptr()) };
    }
}

/// The facts about the current process's address space that placement needs.
pub fn vm_layout() -> VmLayout {
    let mut l = sys::kpi_vm_layout {
        map_min: 0,
        map_max: 0,
        data_start: 0,
        data_limit: 0,
    };
    // SAFETY: called in a process context (a cdevsw method); l is a valid out
    // pointer.
    unsafe { sys::kpi_vm_layout(&mut l) };
    VmLayout {
        map_min: l.map_min,
        map_max: l.map_max,
        data_start: l.data_start,
        data_limit: l.data_limit,
    }
}

/// Installs `priv_` as the current open file's devfs private data; from then on the
/// kernel owns it and runs the destructor at the last close.
///
/// # Safety
/// Called from d_open of this device; `priv_` is what the destructor
/// (`ksyms_rs_cdevpriv_dtor`) takes back, an `OpenFile` from `KBox::into_raw`, and
/// nothing else frees it once this succeeds.
pub unsafe fn set_cdevpriv(priv_: NonNull<c_void>) -> Result<()> {
    // SAFETY: the caller's contract; kpi_set_cdevpriv only stores the pointer.
    Error::check(unsafe { sys::kpi_set_cdevpriv(priv_.as_ptr()) })
}

/// The current open file's devfs private data.
pub fn get_cdevpriv() -> Result<NonNull<c_void>> {
    let mut p: *mut c_void = core::ptr::null_mut();
    // SAFETY: called from a cdevsw method of this device; p is a valid out pointer.
    Error::check(unsafe { sys::kpi_get_cdevpriv(&mut p) })?;
    NonNull::new(p).ok_or(Error::Invalid)
}

/// A linker file, valid during one callback of [`foreach_linker_file`].
pub struct KernelFile<'w> {
    lf: NonNull<sys::linker_file>,
    symbols: &'w [Elf64Sym],
    strings: &'w [u8],
    is_kernel: bool,
    key: FileKey,
}

impl<'w> KernelFile<'w> {
    /// # Safety
    /// `lf` is the linker file passed to the current foreach callback (the kernel
    /// linker's lock is held, so its tables stay put until the callback returns).
    unsafe fn new(lf: NonNull<sys::linker_file>) -> Result<Self> {
        let mut f = sys::kpi_linker_file {
            symtab: core::ptr::null(),
            strtab: core::ptr::null(),
            nsyms: 0,
            strsz: 0,
            id: 0,
            loadcnt: 0,
        };
        // SAFETY: lf is live (contract); f is a valid out pointer.
        unsafe { sys::kpi_linker_file(lf.as_ptr(), &mut f) };
        let nsyms = usize::try_from(f.nsyms).map_err(|_| Error::BadLinkerFile)?;
        let strsz = usize::try_from(f.strsz).map_err(|_| Error::BadLinkerFile)?;
        // SAFETY: the linker reports nsyms entries at symtab and strsz bytes at strtab,
        // alive while its lock is held (contract); table_slice checks null, alignment
        // and that the byte size fits an isize.
        let symbols = unsafe { table_slice(f.symtab.cast::<Elf64Sym>(), nsyms)? };
        // SAFETY: as above.
        let strings = unsafe { table_slice(f.strtab.cast::<u8>(), strsz)? };
        Ok(KernelFile {
            lf,
            symbols,
            strings,
            is_kernel: f.id == 1,
            key: FileKey {
                file: lf.as_ptr() as u64,
                // Never reused while the kernel runs (kern_linker.c sets it from a
                // counter bumped at every linker file made; an id is reused: the
                // next file loaded gets the id of the last one if it is gone).
                load: f.loadcnt as u64,
                symbols: symbols.as_ptr() as u64,
                symbol_count: symbols.len() as u64,
                strings: strings.as_ptr() as u64,
                string_bytes: strings.len() as u64,
            },
        })
    }
}

/// A slice over a table the kernel linker reports, checked for what can be checked.
///
/// # Safety
/// When `len > 0` and `ptr` is non-null and aligned, `len` elements at `ptr` are
/// readable for `'a`.
unsafe fn table_slice<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(Error::BadLinkerFile);
    }
    if len
        .checked_mul(core::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Error::BadLinkerFile);
    }
    // SAFETY: non-null, aligned, byte size within isize (checked); readable for 'a
    // (contract).
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

impl LinkerFile for KernelFile<'_> {
    fn is_kernel(&self) -> bool {
        self.is_kernel
    }
    fn symbols(&self) -> Result<&[Elf64Sym]> {
        Ok(self.symbols)
    }
    fn strings(&self) -> Result<&[u8]> {
        Ok(self.strings)
    }
    fn symbol_value(&self, index: usize, _sym: &Elf64Sym) -> Option<u64> {
        // The linker identifies the symbol by its address inside its own table.
        let sym = self.symbols.get(index)?;
        let mut value = 0u64;
        // SAFETY: lf is live during the callback; sym points into lf's symbol table;
        // value is a valid out pointer.
        let ret = unsafe {
            sys::kpi_symbol_value(
                self.lf.as_ptr(),
                (sym as *const Elf64Sym).cast(),
                &mut value,
            )
        };
        (ret == 0).then_some(value)
    }
    fn key(&self) -> Option<FileKey> {
        Some(self.key)
    }
}

/// Calls `f` for each linker file in the kernel's order, the kernel first, with the
/// kernel linker's lock held. Stops at `f`'s first error and returns it.
pub fn foreach_linker_file<F>(mut f: F) -> Result<()>
where
    F: FnMut(&KernelFile<'_>) -> Result<()>,
{
    struct Ctx<'f, F> {
        f: &'f mut F,
        error: Option<Error>,
    }

    unsafe extern "C" fn trampoline<F>(lf: *mut sys::linker_file, ctx: *mut c_void) -> i32
    where
        F: FnMut(&KernelFile<'_>) -> Result<()>,
    {
        // SAFETY: ctx is the &mut Ctx<F> passed below, alive for the whole walk and
        // used by nothing else meanwhile.
        let ctx = unsafe { &mut *ctx.cast::<Ctx<'_, F>>() };
        let result = match NonNull::new(lf) {
            // SAFETY: lf is the linker file of this callback.
            Some(lf) => unsafe { KernelFile::new(lf) }.and_then(|file| (ctx.f)(&file)),
            None => Err(Error::BadLinkerFile),
        };
        match result {
            Ok(()) => 0,
            Err(e) => {
                ctx.error = Some(e);
                1
            }
        }
    }

    let mut ctx = Ctx {
        f: &mut f,
        error: None,
    };
    // SAFETY: trampoline::<F> matches kpi_linker_cb; ctx outlives the call.
    let ret = unsafe {
        sys::kpi_linker_foreach(Some(trampoline::<F>), (&mut ctx as *mut Ctx<'_, F>).cast())
    };
    match (ret, ctx.error) {
        (_, Some(e)) => Err(e),
        (0, None) => Ok(()),
        (e, None) => Err(Error::Kernel(e)),
    }
}
