//! `/dev/ksyms` for FreeBSD: the logic of the driver, as a `no_std` crate.
//!
//! The crate is built twice. For the kernel (`x86_64-unknown-none`) it is a static
//! library linked into `ksyms.ko` beside the C shim in `kmod/`, which calls the
//! entry points of [`ffi`] and provides the `kpi_*` services declared in
//! `kmod/ksyms_kpi.h`. On the host it links `std` (for the panic handler and the
//! test harness), and the tests provide the `kpi_*` services from a simulated kernel.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "none"))]
extern crate std;

pub mod device;
pub mod elf;
pub mod error;
pub mod ffi;
pub mod kept;
pub mod kpi;
pub mod placement;
pub mod probe;
pub mod snapshot;
pub mod values;

pub use error::{Error, Result};
