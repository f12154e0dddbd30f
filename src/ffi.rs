//! The entry points the shim calls (`ksyms_rs_*` in `kmod/ksyms_kpi.h`), and the
//! panic handler of the kernel build.
//!
//! This is the one place where a [`Result`] becomes an errno.

use core::ffi::{c_int, c_ulong, c_void};
use core::ptr::NonNull;

use crate::device;
use crate::error::{Error, Result};
use crate::kpi::{sys, Proc, Uio};
use crate::probe;

fn status(result: Result<()>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(e) => e.errno(),
    }
}

/// MOD_LOAD.
#[no_mangle]
pub extern "C" fn ksyms_rs_load() -> c_int {
    status(device::load())
}

/// MOD_UNLOAD: 0, or EBUSY while the device is open.
#[no_mangle]
pub extern "C" fn ksyms_rs_unload() -> c_int {
    status(device::unload())
}

/// d_open.
#[no_mangle]
pub extern "C" fn ksyms_rs_open(fflags: c_int, cache: c_int) -> c_int {
    let result = device::open(fflags, cache != 0);
    if let Err(e) = result {
        probe::open_refused(e);
    }
    status(result)
}

/// d_read.
///
/// # Safety
/// `uio` is the uio of the current d_read call, and `offset` its `uio_offset`.
#[no_mangle]
pub unsafe extern "C" fn ksyms_rs_read(uio: *mut sys::uio, offset: i64) -> c_int {
    // SAFETY: the caller passes the live uio of this read and its offset (contract).
    match unsafe { Uio::from_raw(uio, offset) } {
        Some(uio) => status(device::read(&uio)),
        None => Error::Invalid.errno(),
    }
}

/// d_ioctl.
///
/// # Safety
/// `data` points to the kernel's copy of the argument, `len` (`IOCPARM_LEN(cmd)`)
/// bytes, readable and writable for the call and used by nothing else meanwhile.
#[no_mangle]
pub unsafe extern "C" fn ksyms_rs_ioctl(cmd: c_ulong, data: *mut c_void, len: usize) -> c_int {
    // c_ulong is 32 bits on i386: widen, never truncate.
    #[allow(clippy::useless_conversion)]
    let cmd = u64::from(cmd);
    if isize::try_from(len).is_err() {
        return Error::Invalid.errno();
    }
    let arg: &mut [u8] = match NonNull::new(data.cast::<u8>()) {
        // SAFETY: len bytes at data are the argument buffer, valid and ours alone for
        // the call (contract); len fits an isize (checked above).
        Some(data) => unsafe { core::slice::from_raw_parts_mut(data.as_ptr(), len) },
        None if len == 0 => &mut [],
        None => return Error::Invalid.errno(),
    };
    status(device::ioctl(cmd, arg))
}

/// d_mmap_single.
///
/// # Safety
/// `offset` and `objp` are valid for reads and writes for the call.
#[no_mangle]
pub unsafe extern "C" fn ksyms_rs_mmap_single(
    offset: *mut u64,
    size: u64,
    objp: *mut *mut sys::vm_object,
    nprot: c_int,
) -> c_int {
    if offset.is_null() || objp.is_null() {
        return Error::Invalid.errno();
    }
    // SAFETY: non-null and valid for the call (contract).
    let off = unsafe { offset.read() };
    match device::mmap_single(off, size, nprot) {
        Ok(object) => {
            // SAFETY: as above; the reference goes to the kernel's new mapping.
            unsafe { objp.write(object.into_raw()) };
            0
        }
        Err(e) => e.errno(),
    }
}

/// The cdevpriv destructor.
///
/// # Safety
/// `priv_` is a cdevpriv installed by [`ksyms_rs_open`], passed once.
#[no_mangle]
pub unsafe extern "C" fn ksyms_rs_cdevpriv_dtor(priv_: *mut c_void) {
    if let Some(p) = NonNull::new(priv_) {
        // SAFETY: forwarded contract.
        unsafe { device::cdevpriv_dtor(p) };
    }
}

/// kld_load, kld_unload_try and kld_unload events.
#[no_mangle]
pub extern "C" fn ksyms_rs_kld_changed() {
    device::kld_changed();
}

/// process_exit event.
#[no_mangle]
pub extern "C" fn ksyms_rs_proc_exit(p: *mut sys::proc_) {
    if let Some(p) = Proc::from_raw(p) {
        device::proc_exit(p);
    }
}

/// process_exec event.
#[no_mangle]
pub extern "C" fn ksyms_rs_proc_exec(p: *mut sys::proc_) {
    if let Some(p) = Proc::from_raw(p) {
        device::proc_exec(p);
    }
}

/// The permissions of /dev/ksyms from the debug.ksyms.mode tunable (`value`, if
/// `found` is non-zero): 0 and the mode in `*mode`, or EINVAL with the default in
/// `*mode` when the value is refused.
///
/// # Safety
/// `mode` is valid for a write of a `c_int`.
#[no_mangle]
pub unsafe extern "C" fn ksyms_rs_device_mode(
    found: c_int,
    value: c_int,
    mode: *mut c_int,
) -> c_int {
    let (m, result) = match device::device_mode((found != 0).then_some(value)) {
        Ok(m) => (m, Ok(())),
        Err(m) => (m, Err(Error::Invalid)),
    };
    if mode.is_null() {
        return Error::Invalid.errno();
    }
    // SAFETY: non-null and valid for a write (contract).
    unsafe { mode.write(m) };
    status(result)
}

/// The sysctl debug.ksyms.cached_bytes.
#[no_mangle]
pub extern "C" fn ksyms_rs_cached_bytes() -> u64 {
    device::cached_bytes()
}

/// The sysctl debug.ksyms.spare_bytes.
#[no_mangle]
pub extern "C" fn ksyms_rs_spare_bytes() -> u64 {
    device::spare_bytes()
}

/// Nothing reachable from an entry point panics (no unwrap, no indexing, checked
/// arithmetic), so this is for the impossible; it stops the kernel with the message
/// rather than run on in an unknown state.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;

    struct Message {
        bytes: [u8; 160],
        len: usize,
    }

    impl Write for Message {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for &b in s.as_bytes() {
                if let Some(slot) = self.bytes.get_mut(self.len) {
                    *slot = b;
                    self.len += 1;
                }
            }
            Ok(())
        }
    }

    let mut msg = Message {
        bytes: [0; 160],
        len: 0,
    };
    let _ = write!(msg, "ksyms: {}", info.message());
    if let Some(loc) = info.location() {
        let _ = write!(msg, " at {}:{}", loc.file(), loc.line());
    }
    // SAFETY: msg.bytes[..msg.len] is initialised; kpi_panic does not return.
    unsafe { sys::kpi_panic(msg.bytes.as_ptr().cast(), msg.len) }
}
