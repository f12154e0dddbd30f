//! The one error type, and the one place where it becomes an errno.

/// FreeBSD errno values (`sys/errno.h`). Only the ones this driver returns.
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENXIO: i32 = 6;
    pub const ENOMEM: i32 = 12;
    pub const EFAULT: i32 = 14;
    pub const EBUSY: i32 = 16;
    pub const EINVAL: i32 = 22;
    pub const ENOTTY: i32 = 25;
    pub const EFBIG: i32 = 27;
    pub const EFTYPE: i32 = 79;
    pub const EOVERFLOW: i32 = 84;
}

/// Everything that can go wrong, from building a snapshot to serving a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// An allocation (kernel memory or a VM object) failed.
    NoMemory,
    /// The set of linker files changed between the sizing and the writing walk, or
    /// kept changing for every attempt.
    Changed,
    /// A size or offset does not fit the snapshot's fields (or the address space).
    TooLarge,
    /// A linker file's symbol or string table is malformed: a name past its string
    /// table, an unterminated string table, a count that does not fit, a null or
    /// misaligned table.
    BadLinkerFile,
    /// Write access was asked of a read-only device.
    ReadOnly,
    /// The calling process already holds an open of the device, or the module is in use.
    Busy,
    /// A bad offset, length or protection from user space.
    Invalid,
    /// An ioctl the device does not know.
    NoSuchIoctl,
    /// A value does not fit the caller's (32-bit) type.
    Overflow,
    /// The device is going away (module unload in progress).
    Gone,
    /// An errno reported by a kernel service, passed through unchanged.
    Kernel(i32),
}

impl Error {
    /// The errno a system call returns for this error.
    pub const fn errno(self) -> i32 {
        match self {
            Error::NoMemory => errno::ENOMEM,
            Error::Changed | Error::Gone => errno::ENXIO,
            Error::TooLarge => errno::EFBIG,
            Error::BadLinkerFile => errno::EFTYPE,
            Error::ReadOnly => errno::EPERM,
            Error::Busy => errno::EBUSY,
            Error::Invalid => errno::EINVAL,
            Error::NoSuchIoctl => errno::ENOTTY,
            Error::Overflow => errno::EOVERFLOW,
            // A kernel service that claims failure with 0 must not look like success.
            Error::Kernel(0) => errno::EFAULT,
            Error::Kernel(e) => e,
        }
    }

    /// An error from a kernel service's return value (0 is success).
    pub const fn check(ret: i32) -> Result<()> {
        if ret == 0 {
            Ok(())
        } else {
            Err(Error::Kernel(ret))
        }
    }
}

pub type Result<T> = core::result::Result<T, Error>;
