//! ksyms(8): reads a `/dev/ksyms` snapshot (the device or a file) and summarises,
//! resolves, searches, checks or dumps it. The ELF types and the snapshot engine
//! come from the driver's own crate, so the tool and the kernel agree on the format
//! by construction; `check` restates SPEC.md's rules independently. The rest is
//! the ecosystem's: clap for the command line, globset for `find`'s patterns,
//! serde_json for `dump --json`, object for reading ELF.

pub mod assemble;
pub mod check;
pub mod cli;
pub mod elfread;
pub mod files;
pub mod input;
pub mod machine;
pub mod report;
