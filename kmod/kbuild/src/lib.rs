//! The kernel build of ksyms.ko's Rust half, and the checks that it fits the
//! FreeBSD kernel, for every architecture the module supports.
//!
//! Objects and archives are read with the `object` crate and amd64 code is decoded
//! with `iced-x86`, so the build and its checks work the same on Linux and FreeBSD
//! hosts, whatever readelf or objdump the host has (FreeBSD's readelf is
//! elftoolchain's, and its base system has no objdump). Every step that cannot be
//! done fails with a message; nothing is skipped silently.

pub mod arch;
pub mod fit;
pub mod header;
pub mod kernel;

/// Why a step could not be done.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}
