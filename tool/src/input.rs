//! Getting the bytes of a snapshot: from `/dev/ksyms` or from a file.
//!
//! Reading the device is open(2) (read-only: the device refuses write opens),
//! then read(2) to end of file. On FreeBSD the tool also asks KIOCGSIZE and checks
//! that it read exactly that many bytes. Every failure becomes one line that
//! says what to do about it.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The device.
pub const DEVICE: &str = "/dev/ksyms";

/// The loader tunable that sets the device's mode (kmod/ksyms_shim.c).
pub const MODE_TUNABLE: &str = "debug.ksyms.mode";

/// `_IOR('l', 1, size_t)` and `_IOR('l', 2, void *)`: the driver's own numbers.
pub use ksyms::device::{KIOCGADDR, KIOCGSIZE};

/// FreeBSD errno values the device returns at open (the same numbers on Linux).
const EPERM: i32 = 1;
const ENXIO: i32 = 6;
const ENOMEM: i32 = 12;
const EBUSY: i32 = 16;

/// Whether `path` is the device (messages then say how to get it working).
pub fn is_device(path: &Path) -> bool {
    path == Path::new(DEVICE)
}

/// The message for an error `e` met while opening or reading `path`.
pub fn describe(path: &Path, e: &io::Error) -> String {
    let p = path.display();
    let dev = is_device(path);
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) if dev => format!(
            "{p}: no such file: is ksyms.ko loaded? kldload /boot/modules/ksyms.ko \
             (a plain `kldload ksyms` loads the base system's /boot/kernel/ksyms.ko)"
        ),
        (io::ErrorKind::NotFound, _) => format!("{p}: no such file"),
        (io::ErrorKind::PermissionDenied, Some(EPERM)) if dev => {
            format!("{p}: operation not permitted: the device is read-only")
        }
        (io::ErrorKind::PermissionDenied, _) if dev => format!(
            "{p}: permission denied: the device is mode 0400, owner root: run as root \
             (or relax the mode with the loader tunable {MODE_TUNABLE}: \
             \"0440\" for group wheel, \"0444\" for everyone)"
        ),
        (io::ErrorKind::PermissionDenied, _) => format!("{p}: permission denied"),
        (_, Some(EBUSY)) if dev => {
            format!("{p}: device busy: this process already has the device open")
        }
        (_, Some(ENXIO)) if dev => format!(
            "{p}: no snapshot: kernel modules kept loading or unloading while it was built, \
             or ksyms is being unloaded; try again"
        ),
        (_, Some(ENOMEM)) if dev => {
            format!("{p}: the kernel is out of memory for the snapshot")
        }
        _ => format!("{p}: {e}"),
    }
}

/// The snapshot's bytes.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let mut f = File::open(path).map_err(|e| describe(path, &e))?;
    let expected = device_size(&f);
    let mut bytes = Vec::new();
    if let Some(n) = expected.and_then(|n| usize::try_from(n).ok()) {
        bytes.reserve_exact(n);
    }
    f.read_to_end(&mut bytes).map_err(|e| describe(path, &e))?;
    if let Some(n) = expected {
        if n != bytes.len() as u64 {
            return Err(format!(
                "{}: read {} bytes, but KIOCGSIZE says the snapshot is {n}",
                path.display(),
                bytes.len()
            ));
        }
    }
    Ok(bytes)
}

/// KIOCGSIZE, when `f` is a character device that answers it.
#[cfg(target_os = "freebsd")]
fn device_size(f: &File) -> Option<u64> {
    use std::os::fd::AsRawFd;
    use std::os::raw::{c_int, c_ulong};
    use std::os::unix::fs::FileTypeExt;

    extern "C" {
        fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    }

    if !f.metadata().ok()?.file_type().is_char_device() {
        return None;
    }
    let mut size: usize = 0;
    // SAFETY: KIOCGSIZE is _IOR('l', 1, size_t): the kernel writes one size_t to
    // the address passed, which points at `size`, a live, aligned usize (size_t on
    // FreeBSD); the descriptor is open for the duration of the call.
    let rc = unsafe { ioctl(f.as_raw_fd(), KIOCGSIZE as c_ulong, &mut size as *mut usize) };
    // The base system's driver has no ioctls: then the read alone says the size.
    (rc == 0).then_some(size as u64)
}

#[cfg(not(target_os = "freebsd"))]
fn device_size(_f: &File) -> Option<u64> {
    None
}
